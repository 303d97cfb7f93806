"""Shared fixtures: a tiny random model (unit tests) and the embedded Gemma-3-270M (integration).

The embedded model is converted once per machine into ``$PROBE_LENS_CACHE`` (or ~/.cache/probe_lens)
and loaded once per test session.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture
def tiny():
    """A fresh 2-layer random Gemma-shaped HookedTransformer (seed 0)."""
    from probe_lens.testing import tiny_model

    return tiny_model(seed=0)


@pytest.fixture
def tiny4():
    """A fresh 4-layer random Gemma-shaped HookedTransformer (seed 0)."""
    from probe_lens.testing import tiny_model

    return tiny_model(seed=0, n_layers=4)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded Gemma-3-270M as a HookedTransformer (CPU, fp32). Do not train it in place."""
    from probe_lens import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def embedded_hf():
    """The same weights as an HF ``(model, tokenizer)``: the oracle."""
    from probe_lens.models import load_embedded_hf

    return load_embedded_hf()


@pytest.fixture
def registries():
    """The behaviour, scorer and probe-class registries, restored as they were after the test."""
    from probe_lens.behaviours import BEHAVIOURS
    from probe_lens.probes import PROBE_CLASSES
    from probe_lens.scorers import SCORERS

    saved = [(registry, registry.items()) for registry in (BEHAVIOURS, SCORERS, PROBE_CLASSES)]
    yield
    for registry, items in saved:
        for name in registry.names():
            registry.unregister(name)
        for name, item in items:
            registry.register(name, item)
