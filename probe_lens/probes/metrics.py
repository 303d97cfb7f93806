"""The one AUROC and the one cosine of probe_lens (probes, telemetry and study metrics all use these)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import roc_auc_score


def _numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = a.float() if a.dtype in (torch.bfloat16, torch.float16) else a
        return a.numpy()
    return np.asarray(a)


def auroc(y: Any, scores: Float[Any, " n"], *, pos_label: Any = None) -> float:
    """Area under the ROC curve of ``scores`` (higher = more positive) for binary labels ``y`` [n].

    ``y`` holds 0/1 or bools (1 / True = positive) unless ``pos_label`` names the positive class
    among two arbitrary labels (e.g. ``pos_label="toxic"``). numpy, torch and lists are accepted;
    ties count one half.

    Single-class input: raises ``ValueError`` (the AUROC is undefined; this function never returns
    NaN). Callers that log a metric where one class may be missing should catch it and record NaN.
    Also raises ValueError on mismatched lengths, non-binary labels and NaN/inf scores.
    """
    y, s = _numpy(y), _numpy(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"y and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores; they must pair up")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"scores must be real numbers, got dtype {s.dtype}") from exc
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if pos_label is None:
        if (
            y.dtype == object
            or not (np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_))
            or not np.isin(y, [0, 1]).all()
        ):
            raise ValueError(
                f"y must hold binary labels 0/1 (1 = positive), got values {np.unique(y)[:5].tolist()}; "
                "pass pos_label=... for other label sets"
            )
        positive = y.astype(np.int64) == 1
    else:
        labels = np.unique(y)
        if len(labels) > 2:
            raise ValueError(f"y must hold binary labels (two classes), got {len(labels)}: {labels[:5].tolist()}")
        if len(labels) == 2 and pos_label not in labels.tolist():
            raise ValueError(f"pos_label={pos_label!r} is not one of the labels in y {labels.tolist()}")
        positive = y == pos_label
    classes = np.unique(y)
    if len(classes) < 2:
        what = "no labels" if len(classes) == 0 else f"only class {classes[0].item()!r} ({len(y)} examples)"
        raise ValueError(
            f"AUROC needs both classes, but y has {what}: a single class, so the AUROC is "
            "undefined. Evaluate on a set with examples of both classes."
        )
    return float(roc_auc_score(positive.astype(np.int64), s))


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two vectors (flattened, in float64); NaN when either has zero norm."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")
