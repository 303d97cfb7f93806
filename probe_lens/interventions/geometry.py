"""The geometry of evasion: where the class signal lies relative to a probe's direction.

All quantities are computed on labelled held-out activations ``X`` [n, d_model] (pooled, at the
probe's hook) with 0/1 labels ``y`` (1 = positive class). ``delta = mean(X[y == 1]) - mean(X[y == 0])``
is the class signal; the probe's direction ``u`` is its raw-space unit weight (what it reads).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float

from probe_lens.interventions.steering import Direction, direction_vector
from probe_lens.probes.base import ArrayLike, Probe, as_binary_labels, as_numpy_2d

__all__ = ["angle_degrees", "between_class_components", "signal_decomposition"]


def _unit(direction: Direction) -> np.ndarray:
    return direction_vector(direction).numpy().astype(np.float64)


def angle_degrees(a: Direction, b: Direction) -> float:
    """Angle between two directions (tensors or probes' raw-space weights), in degrees [0, 180]."""
    cos = float(np.clip(_unit(a) @ _unit(b), -1.0, 1.0))
    return math.degrees(math.acos(cos))


def between_class_components(X: Float[ArrayLike, "n d_model"], y: ArrayLike, *, share: float = 0.9) -> int:
    """How many principal components of ``X`` hold ``share`` of its between-class variance.

    Definition: centre ``X`` on its mean and take its principal components ``v_1, v_2, ...`` in
    decreasing order of (total) variance. With class priors ``pi`` and ``1 - pi``, the between-class
    variance along a unit vector ``v`` is ``pi (1 - pi) (v . delta)^2``; over the whole principal
    basis it sums to ``pi (1 - pi) ||delta||^2``. The result is the smallest ``k`` such that
    ``v_1 .. v_k`` hold at least ``share`` of that total.

    Small when the class signal lies in the few dominant directions of variation (separation
    concentrated in a low-rank subspace that carries most of the variance); large when it is spread
    over many components or tucked into low-variance directions. A drop after training means the
    separation has been compressed into fewer dominant directions.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    X = as_numpy_2d(X)
    y = as_binary_labels(y, len(X))
    delta = X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)
    _, s, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    along = (vt[s > s[0] * 1e-10] @ delta) ** 2
    cumulative = np.cumsum(along) / (delta @ delta)
    return int(np.searchsorted(cumulative, share - 1e-12) + 1)


def signal_decomposition(
    probe: Probe | Float[torch.Tensor, " d_model"],
    X: Float[ArrayLike, "n d_model"],
    y: ArrayLike,
    *,
    retrained: Probe | Float[torch.Tensor, " d_model"] | None = None,
    share: float = 0.9,
) -> dict[str, float]:
    """The class signal split along the probe's direction and its orthogonal complement.

    Returns ``signal_norm`` (``||delta||``), ``on_probe`` (``delta . u``, signed), ``off_probe``
    (``||delta - (delta . u) u||``), ``share_on_probe`` (``(delta . u)^2 / ||delta||^2``),
    ``n_components`` (:func:`between_class_components` at ``share``) and, with ``retrained`` (a
    probe re-fit on the trained model's activations), ``angle_deg`` between the two directions.
    Shrunk signal: ``signal_norm`` drops; rotated away: ``off_probe`` holds it while ``on_probe`` falls.
    """
    X = as_numpy_2d(X)
    y = as_binary_labels(y, len(X))
    u = _unit(probe)
    if u.shape[0] != X.shape[1]:
        raise ValueError(f"the direction has {u.shape[0]} entries but X has {X.shape[1]} columns")
    delta = X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)
    on = float(delta @ u)
    norm = float(np.linalg.norm(delta))
    out = {
        "signal_norm": norm,
        "on_probe": on,
        "off_probe": float(np.linalg.norm(delta - on * u)),
        "share_on_probe": on * on / (norm * norm) if norm > 0 else math.nan,
        "n_components": float(between_class_components(X, y, share=share)),
    }
    if retrained is not None:
        out["angle_deg"] = angle_degrees(probe, retrained)
    return out
