"""Prompt-clustered AUROC intervals: several continuations of one prompt are not independent rows."""

import numpy as np
import pytest

from probe_lens.experiments.stats import auroc_ci, paired_auroc_diff, paired_auroc_var


def _data(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    return y, rng.normal(size=n) + 0.8 * y, rng.normal(size=n) + 0.5 * y


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_one_row_per_prompt_equals_the_naive_interval(method):
    y, s, _ = _data()
    ids = np.array([f"prompt{i}" for i in np.random.default_rng(1).permutation(len(y))])
    naive, clustered = auroc_ci(y, s, method=method), auroc_ci(y, s, method=method, clusters=ids)
    if method == "bootstrap":  # same seed, same resamples: identical
        assert clustered == naive
    else:
        np.testing.assert_allclose(clustered, naive, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_duplicated_rows_widen_the_naive_interval_but_not_the_clustered_one(method):
    """Each prompt's row copied 4 times adds no information: the naive interval narrows (~1/2 width), the
    prompt-clustered one is wider than it and equals the interval of the one-row-per-prompt data."""
    y, s, _ = _data()
    Y, S, C = np.repeat(y, 4), np.repeat(s, 4), np.repeat(np.arange(len(y)), 4)
    naive = auroc_ci(Y, S, method=method)
    clustered = auroc_ci(Y, S, method=method, clusters=C)
    single = auroc_ci(y, s, method=method)
    assert clustered[2] - clustered[1] > 1.5 * (naive[2] - naive[1])
    np.testing.assert_allclose(clustered, single, rtol=0, atol=1e-12)


def test_paired_difference_clustered_by_prompt():
    y, a, b = _data()
    C = np.repeat(np.arange(len(y)), 3)
    Y, A, B = np.repeat(y, 3), np.repeat(a, 3), np.repeat(b, 3)
    np.testing.assert_allclose(paired_auroc_var(Y, A, B, clusters=C), paired_auroc_var(y, a, b), atol=1e-12)
    assert paired_auroc_var(Y, A, B)[1] < 0.5 * paired_auroc_var(y, a, b)[1]
    for method in ("delong", "bootstrap"):
        np.testing.assert_allclose(
            paired_auroc_diff(Y, A, B, clusters=C, method=method), paired_auroc_diff(y, a, b, method=method), atol=1e-12
        )


def test_mixed_prompts_and_bad_cluster_ids():
    y, s, _ = _data()
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 15, size=len(y))  # prompts holding both classes
    lo1, hi1 = auroc_ci(y, s, method="bootstrap", clusters=ids, n_boot=500)[1:]
    assert auroc_ci(y, s, method="bootstrap", clusters=ids, n_boot=500) == auroc_ci(
        y, s, method="bootstrap", clusters=ids, n_boot=500
    )
    assert lo1 < 0.66 < hi1
    lo2, hi2 = auroc_ci(y, s, clusters=ids)[1:]
    assert 0 < lo2 < hi2 < 1
    with pytest.raises(ValueError, match="one id per example"):
        auroc_ci(y, s, clusters=ids[:-1])
