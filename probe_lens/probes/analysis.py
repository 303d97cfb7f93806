"""Comparing probes: a metrics table, the direction-cosine matrix, and a layer sweep."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float, Int
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from tqdm.auto import tqdm

from probe_lens.probes.base import (
    ArrayLike,
    Probe,
    as_binary_labels,
    as_numpy_2d,
    layer_of_hook,
)
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.metrics import auroc


def _named(probes: Mapping[str, Any] | Sequence[Any] | Any) -> dict[str, Any]:
    if isinstance(probes, Mapping):
        out = dict(probes)
    elif isinstance(probes, (list, tuple)):
        out = {f"probe{i}": p for i, p in enumerate(probes)}
    else:
        out = {"probe0": probes}
    if not out:
        raise ValueError("no probes given")
    return out


def probe_report(
    probes: Mapping[str, Probe] | Sequence[Probe] | Probe,
    X: Float[ArrayLike, "n d_model"],
    y: Int[ArrayLike, " n"],
    *,
    expand_ensembles: bool = True,
) -> pd.DataFrame:
    """AUROC and accuracy of many probes on one labelled set.

    Returns one row per probe (ensembles: one row for the aggregate and, with
    ``expand_ensembles``, one per member named ``"{name}/m{i}"``) with columns
    probe, type, hook, member, auroc, accuracy, n, n_positive.
    """
    X = as_numpy_2d(X)
    y = as_binary_labels(y, X.shape[0])
    rows = []
    for name, probe in _named(probes).items():
        if not hasattr(probe, "predict_proba"):
            raise TypeError(f"probe {name!r} is a {type(probe).__name__}, not a probe")
        entries: list[tuple[str, Any, int | None]] = [(name, probe, None)]
        if expand_ensembles and getattr(probe, "is_ensemble", False):
            entries += [(f"{name}/m{i}", m, i) for i, m in enumerate(probe.member_probes())]
        for sub, p, member in entries:
            rows.append(
                {
                    "probe": sub,
                    "type": type(p).__name__,
                    "hook": p.hook,
                    "member": member,
                    "auroc": auroc(y, p.proba(X)),
                    "accuracy": float(np.mean(p.predict(X) == p.classes_[y])),  # 0/1 -> its labels
                    "n": len(y),
                    "n_positive": int(y.sum()),
                }
            )
    df = pd.DataFrame(rows)
    df["member"] = df["member"].astype("Int64")
    return df


def cosine_matrix(
    probes: Mapping[str, Probe | np.ndarray] | Sequence[Probe | np.ndarray] | Probe,
) -> pd.DataFrame:
    """Cosine similarity between probe directions, as a labelled square DataFrame.

    Accepts probes, ensembles (expanded into members ``"{name}/m{i}"``) and raw direction
    arrays ([d_model] or [k, d_model]). All directions must share d_model.
    """
    names: list[str] = []
    vectors: list[np.ndarray] = []
    for name, p in _named(probes).items():
        if isinstance(p, Probe):
            rows = np.stack([np.asarray(m.coef_raw_, dtype=np.float64) for m in p.member_probes()])
            names += [f"{name}/m{i}" for i in range(len(rows))] if p.is_ensemble else [name]
        else:
            rows = np.asarray(p.detach().cpu() if hasattr(p, "detach") else p, dtype=np.float64)
            if rows.ndim == 1:
                rows = rows[None]
                names.append(name)
            elif rows.ndim == 2:
                names += [f"{name}/{i}" for i in range(len(rows))]
            else:
                raise ValueError(f"direction array {name!r} must be [d] or [k, d], got {rows.shape}")
        vectors.append(rows)
    dims = {v.shape[1] for v in vectors}
    if len(dims) != 1:
        raise ValueError(f"directions have different d_model {sorted(dims)}; compare one hook at a time")
    D = np.concatenate(vectors)
    norms = np.linalg.norm(D, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a direction has zero norm")
    D = D / norms
    return pd.DataFrame(np.clip(D @ D.T, -1.0, 1.0), index=names, columns=names)


def layer_sweep(
    acts_by_hook: Mapping[str, Float[ArrayLike, "n d_model"]],
    y: Int[ArrayLike, " n"],
    *,
    probe_factory: Callable[[], Probe] = LogisticProbe,
    test_size: float = 0.3,
    seed: int = 0,
    groups: ArrayLike | None = None,
    progress: bool = True,
    return_probes: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Probe]]:
    """Fit the same probe type at every hook on one held-out split; a tidy table to pick a layer.

    Args:
        acts_by_hook: ``{hook: activations [n, d_model]}`` for the same n examples (e.g. the
            output of ``probe_lens.activations.collect``).
        y: labels [n] (1 = positive).
        probe_factory: ``() -> unfitted probe`` (a class works); its hook metadata is set here.
        test_size, seed: the held-out split (stratified, identical for every hook).
        groups: [n] group ids (e.g. prompt ids) kept whole on one side of the split. Pass them when
            examples share a source (several continuations of one prompt): a split that puts one
            prompt on both sides rewards memorising prompts and overstates the test AUROC. With
            groups the split is by group (``GroupShuffleSplit``, ``test_size`` of the groups), not
            stratified.
        return_probes: also return ``{hook: fitted probe}``.

    Returns:
        DataFrame with columns hook, layer (from ``"blocks.{L}."``, else <NA>), auroc_train,
        auroc_test, accuracy_test, n_train, n_test; sorted by layer then input order.
    """
    if not acts_by_hook:
        raise ValueError("acts_by_hook is empty; pass {hook_name: activations [n, d_model]}")
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    first = next(iter(acts_by_hook.values()))
    n = first.shape[0] if hasattr(first, "shape") else len(first)
    y = as_binary_labels(y, n)
    if groups is not None:
        train, test = _group_split(groups, y, test_size=test_size, seed=seed)
    else:
        train, test = _stratified_split(y, test_size=test_size, seed=seed)
    rows, fitted = [], {}
    for order, (hook, acts) in enumerate(tqdm(acts_by_hook.items(), desc="layer sweep", disable=not progress)):
        X = as_numpy_2d(acts, name=f"activations at {hook!r}")
        if X.shape[0] != n:
            raise ValueError(f"activations at {hook!r} have {X.shape[0]} rows, expected {n} (len(y))")
        probe = probe_factory()
        probe.set_metadata(hook=hook)
        probe.fit(X[train], y[train])
        rows.append(
            {
                "hook": hook,
                "layer": layer_of_hook(hook),
                "auroc_train": auroc(y[train], probe.proba(X[train])),
                "auroc_test": auroc(y[test], probe.proba(X[test])),
                "accuracy_test": probe.accuracy(X[test], y[test]),
                "n_train": len(train),
                "n_test": len(test),
                "_order": order,
            }
        )
        fitted[hook] = probe
    df = pd.DataFrame(rows)
    df["layer"] = df["layer"].astype("Int64")
    df = df.sort_values(["layer", "_order"], na_position="first", kind="stable")
    df = df.drop(columns="_order").reset_index(drop=True)
    return (df, fitted) if return_probes else df


def _stratified_split(y: np.ndarray, *, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(y)
    try:
        return train_test_split(np.arange(n), test_size=test_size, stratify=y, random_state=seed)
    except ValueError as exc:
        raise ValueError(
            f"cannot make a stratified {test_size:.0%} test split of {n} examples with class "
            f"counts {np.bincount(y, minlength=2).tolist()}: {exc}. Use more labelled examples."
        ) from exc


def _group_split(groups: ArrayLike, y: np.ndarray, *, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != len(y):
        raise ValueError(f"groups must be one id per example: got shape {groups.shape} for {len(y)} labels")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"groups has {n_groups} distinct id(s); a grouped split needs at least 2")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(y)), y, groups))
    for name, idx in (("train", train), ("test", test)):
        if len(np.unique(y[idx])) < 2:
            raise ValueError(
                f"the grouped split's {name} side has one class only ({len(idx)} examples from "
                f"{len(np.unique(groups[idx]))} groups); use more groups, another seed or another test_size"
            )
    return train, test
