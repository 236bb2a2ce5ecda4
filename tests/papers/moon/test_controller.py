"""CartPole controller training and rollouts, QAT of a controller."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from qfail.papers.moon import controller as rl
from qfail.quant import int8_dynamic
from qfail.train import Trained


@pytest.fixture(scope="module")
def trained():
    return rl.train_controller(rl.RLConfig(iterations=80, seed=0))  # reaches the cap: 500 on these seeds


@pytest.fixture(scope="module")
def policy(trained):
    return trained.model


def test_reinforce_reaches_the_cap_and_is_deterministic(policy):
    run = rl.rollout(policy, 10, seed=123)
    assert run.mean >= 475
    again = rl.rollout(policy, 10, seed=123)
    assert (run.rewards == again.rewards).all() and torch.equal(run.states, again.states)
    assert len(run.states) == run.rewards.sum() and run.states.shape[1] == 4


def test_training_is_reproducible_from_the_seed():
    config = rl.RLConfig(iterations=3, seed=5)
    a, b = rl.controller_net(seed=5), rl.controller_net(seed=5)
    assert rl.reinforce(a, config) == rl.reinforce(b, config)  # no cache involved
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    other = rl.controller_net(seed=5)
    assert rl.reinforce(other, rl.RLConfig(iterations=3, seed=6)) != rl.reinforce(rl.controller_net(seed=5), config)


def test_int8_decisions_one_at_a_time_and_table(policy):
    run = rl.rollout(policy, 2, seed=7)
    q = int8_dynamic(policy)
    table = rl.controller_table({"FP32": policy, "dynamic INT8": q}, run, episodes=2, seed=7)
    assert table.loc["FP32", "agreement with FP (%)"] == 100.0
    assert 50 <= table.loc["dynamic INT8", "agreement with FP (%)"] <= 100
    assert table.loc["dynamic INT8", "size (KB)"] < table.loc["FP32", "size (KB)"]


@pytest.mark.parametrize("method", rl.FINE_TUNE_METHODS)
def test_qat_controller_trains_the_quantized_weights(trained, policy, method):
    states = rl.rollout(policy, 1, seed=3).states
    qm = rl.qat_controller(trained, 4, states, method=method, updates=2, seed=0)
    fresh = rl.qat_controller(trained, 4, states, method=method, updates=2, seed=0)  # from the cache
    assert qm.history == fresh.history and len(qm.history) >= 1 and qm.key["net"] == trained.key
    changed = any(not torch.equal(a, b) for a, b in zip(qm.model.parameters(), policy.parameters()))
    assert changed


def test_qat_seeds_table_scores_each_seed_on_the_same_episodes(trained, policy):
    run = rl.rollout(policy, 1, seed=3)
    runs = rl.qat_seeds_table(trained, 4, run, [0, 1], episodes=2, eval_seed=7, updates=2)
    assert list(runs.index) == [0, 1] and runs.index.name == "QAT seed"
    assert (runs["reward cap"] == rl.MAX_STEPS).all()  # rollout's cap: what the verdict cuts its interval at
    for seed in (0, 1):  # the run of each seed, from the cache, scored as controller_table scores it
        model = rl.qat_controller(trained, 4, run.states, updates=2, seed=seed).model
        row = rl.controller_table({"QAT": model}, run, episodes=2, seed=7).loc["QAT"]
        assert runs.loc[seed, "reward mean"] == row["reward mean"]
        assert runs.loc[seed, "agreement with FP (%)"] == row["agreement with FP (%)"]
    with pytest.raises(ValueError, match="seeds is empty"):
        rl.qat_seeds_table(trained, 4, run, [], episodes=2)


def test_the_quantized_controllers_rows_do_not_interact(trained):
    """REINFORCE plays an update's episodes without a graph and recomputes their log-probabilities
    in one batch: the same numbers only if a row's output does not depend on its batch, which
    QAT's frozen ranges guarantee (ranges tracked with momentum 0 stay where calibration put them)."""
    from qfail.quant.model import qat_config, quantize_model

    states = rl.rollout(trained.model, 1, seed=3).states
    qm = quantize_model(trained.model, qat_config(ema_momentum=0.0), (4, 4), calibration=[states]).train()
    ranges = [b.clone() for n, b in qm.named_buffers() if n.endswith(("act_lo", "act_hi"))]
    together = qm(states)
    alone = torch.cat([qm(s.unsqueeze(0)) for s in states])
    assert ranges and all(torch.equal(r, b) for r, b in
                          zip(ranges, [b for n, b in qm.named_buffers() if n.endswith(("act_lo", "act_hi"))]))
    # a product over one row and over many may differ in its last bit (1e-7 here), which can move a
    # value across a 4-bit rounding boundary on some CPU; a row that depended on its batch would not
    # stay this close
    same = torch.isclose(together, alone, rtol=1e-5, atol=1e-6).all(1)
    assert same.float().mean() >= 0.99 and (together.argmax(1) == alone.argmax(1)).float().mean() >= 0.99


def test_bad_rl_arguments():
    with pytest.raises(ValueError, match="method='ppo' is not allowed; choose one of 'reinforce', 'distill'"):
        rl.qat_controller(Trained(nn.Linear(4, 2), {}), 4, torch.zeros(1, 4), method="ppo")
    with pytest.raises(ValueError, match="episodes=0 is out of range"):
        rl.RLConfig(episodes=0)


def test_the_agreement_ceiling_is_each_grid_cells_most_frequent_action(policy):
    """Three states share a cell of the 2-bit grid (step 1/3 of the calibrated range [0, 1]) with
    actions 0, 1, 1, and a fourth has one of its own: 2 cells, at best 3 of 4 agree."""
    from qfail.quant import QuantConfig, quantize_model

    states = torch.tensor([[0.0, 0, 0, 0], [0.01, 0, 0, 0], [0.02, 0, 0, 0], [1.0, 1, 1, 1]])
    reference = rl.Rollouts(np.array([4.0]), states, torch.tensor([0, 1, 1, 0]))
    model = quantize_model(policy, QuantConfig(), (2, 2), calibration=[states])
    assert rl.input_grid_ceiling(model, reference) == (2, 75.0)
    run = rl.rollout(policy, 2, seed=7)  # a real controller's agreement stays under its grid's ceiling
    ptq = {bits: quantize_model(policy, QuantConfig(), (bits, bits), calibration=[run.states]) for bits in (2, 4)}
    for model in ptq.values():
        cells, ceiling = rl.input_grid_ceiling(model, run)
        assert 1 <= cells <= len(run.states) and rl._agreement(model, run) <= ceiling <= 100
    rows = pd.DataFrame({"agreement with FP (%)": [50.0, 60.0, 70.0, 80.0]},
                        index=["PTQ 2-bit", "QAT 2-bit", "PTQ 4-bit", "QAT 4-bit"])
    grid = rl.input_grid_table(ptq, run, rows)
    assert list(grid.index) == [2, 4] and grid.loc[2, "QAT agreement (%)"] == 60.0
    assert tuple(grid.loc[4, ["grid cells visited", "agreement ceiling (%)"]]) == rl.input_grid_ceiling(ptq[4], run)
    assert grid.loc[2, "input step"] > grid.loc[4, "input step"] > 0
