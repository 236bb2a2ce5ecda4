"""Shared fixtures: a private cache folder and small trained models on the digits."""
from __future__ import annotations

import pytest
import torch

import qfail


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the book's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("QFAIL_CACHE", str(tmp_path_factory.mktemp("qfail-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def digits():
    return qfail.load_data("digits", seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    model = qfail.build_model("cnn", digits.input_shape, seed=0)
    qfail.fit(model, digits.train, qfail.TrainConfig(epochs=8, seed=0))
    return model


@pytest.fixture(scope="session")
def trained_mlp(digits):
    model = qfail.build_model("mlp", digits.input_shape, seed=0)
    qfail.fit(model, digits.train, qfail.TrainConfig(epochs=8, seed=0))
    return model


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
