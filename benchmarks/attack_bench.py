"""qfail PGD vs torchattacks PGD on the same model, batch and budget (``make bench``).

Goal (issue #6): qfail / torchattacks wall time <= 1.05, with robust accuracies equal within
noise. The random starts come from different generators (qfail: a seeded private generator;
torchattacks: the global RNG), so accuracies are compared over several seeds, not bit for bit.
torchattacks 3.5.1 pins an old ``requests``; ``make bench`` installs it with ``--no-deps``
(it imports only torch), so the main environment keeps its versions.
"""
from __future__ import annotations  # noqa: I001 - qfail is imported first, on purpose (qfail.isa)

import qfail  # first: before numpy and torch load, it pins their kernels (qfail.isa)
import statistics
import sys

import torch

from qfail import attack, machine
from run_all import paired_ms  # benchmarks/ is on sys.path when this file runs as a script

try:
    import torchattacks
except ImportError:  # pragma: no cover - reported, not hidden
    sys.exit("torchattacks is not installed: run `make bench` (it installs torchattacks==3.5.1 --no-deps)")


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    machine.configure(threads=2)  # as a chapter runs, on both cores (both sides of every ratio share it)
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, threads {torch.get_num_threads()}")
    print(f"{'model':<18}{'attack':<10}{'qfail ms':>10}{'torchattacks ms':>17}{'ratio':>7}"
          f"{'qfail acc %':>13}{'ta acc %':>10}")
    for size, name in ((8, "cnn"), (28, "cnn"), (8, "mlp")):
        data = qfail.load_data("digits", size=size if size != 8 else None)
        model = qfail.build_model(name, data.input_shape, seed=0)
        qfail.fit(model, data.train, qfail.TrainConfig(epochs=5))
        model.eval()
        x, y = data.train.x[:256], data.train.y[:256]
        for norm, eps, alpha in (("linf", 0.1, 0.025), ("l2", 1.0, 0.25)):
            ta_cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
            ta = ta_cls(model, eps=eps, alpha=alpha, steps=10, random_start=True)
            ms_q, ms_t = paired_ms(lambda: attack.pgd(model, x, y, eps, norm, 10, alpha, seed=0), lambda: ta(x, y),
                                  repeats=20, warmup=3)
            acc_q = [accuracy(model, attack.pgd(model, x, y, eps, norm, 10, alpha, seed=s), y) for s in range(5)]
            acc_t = []
            for s in range(5):
                torch.manual_seed(s)
                acc_t.append(accuracy(model, ta(x, y), y))
            print(f"{name} {size}x{size:<12}{'PGD-' + norm:<10}{ms_q:>10.1f}{ms_t:>17.1f}{ms_q / ms_t:>7.2f}"
                  f"{statistics.mean(acc_q):>9.1f}±{statistics.stdev(acc_q):<3.1f}"
                  f"{statistics.mean(acc_t):>7.1f}±{statistics.stdev(acc_t):.1f}")


if __name__ == "__main__":
    main()
