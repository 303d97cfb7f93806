"""Small definitions every part of probe_lens shares: pooling names, hook-name parsing, thresholds.

One copy of each, so activations, probes, scorers, training and experiments cannot disagree.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

VERSION = "0.1.0"
"""probe_lens's version (``probe_lens.__version__``; pyproject.toml states the same)."""

POOLINGS: tuple[str, ...] = ("mean", "last", "max")
"""How token activations [pos, d_model] are pooled into one vector per text."""

_LAYER_RE = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")


def library_version() -> str:
    """probe_lens's installed version (recorded in every probe's metadata); :data:`VERSION` when run from a source tree."""
    try:
        from importlib.metadata import version

        return version("probe_lens")
    except Exception:  # noqa: BLE001 - not installed (e.g. run from a source tree)
        return VERSION


def metric_word(label: str) -> str:
    """A class name as a word of a metric key: ``"not negative"`` -> ``"not_negative"``, ``"toxic"`` -> ``"toxic"``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def resid_post_hook(layer: int) -> str:
    """TransformerLens name of the residual stream after block ``layer``: 7 -> ``"blocks.7.hook_resid_post"``.

    The one place that spells a layer's hook name; :func:`hook_layer` reads it back.
    """
    return f"blocks.{layer}.hook_resid_post"


def hook_layer(hook: str | None) -> int | None:
    """Layer index of a TransformerLens name: ``"blocks.7.hook_resid_post"`` -> 7.

    Also parses parameter names (``"blocks.3.attn.W_Q"``) and prefixed names
    (``"model.blocks.3.mlp"``). None for ``None`` and names outside a block (``"hook_embed"``).
    """
    if hook is None:
        return None
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name (str) or None, got {hook!r}")
    match = _LAYER_RE.search(hook)
    return int(match.group(1)) if match else None


def check_threshold(threshold: Any, *, name: str = "threshold", allow_one: bool = False) -> float:
    """Validate a probability threshold and return it as a float.

    Accepts a real number strictly between 0 and 1 (``allow_one=True``: in (0, 1]). Raises
    TypeError for non-numbers (bools included) and ValueError for values out of range.
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1), got {threshold!r}")
    value = float(threshold)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value > 0.0 and upper_ok):
        interval = "in (0, 1]" if allow_one else "strictly between 0 and 1"
        raise ValueError(f"{name} must be {interval}, got {threshold!r} (the paper uses 0.5)")
    return value
