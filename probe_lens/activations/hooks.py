"""Naming hook points: by TransformerLens name or by layer index."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from probe_lens._common import hook_layer, resid_post_hook
from probe_lens.models.bridge import LensModel

HookSpec = str | int


class UnknownHookError(ValueError):
    """A hook name that the model does not have."""


def resolve_hook(model: LensModel, hook: HookSpec) -> str:
    """Return the TransformerLens hook name for ``hook``.

    An ``int`` L means ``blocks.{L}.hook_resid_post`` (negative counts from the end). A string must
    be one of ``model.hook_dict``; otherwise the error lists the closest valid names.
    """
    n_layers = model.cfg.n_layers
    if isinstance(hook, bool):
        raise TypeError(f"hook must be a hook name or a layer index, got {hook!r}")
    if isinstance(hook, int):
        layer = hook + n_layers if hook < 0 else hook
        if not 0 <= layer < n_layers:
            raise UnknownHookError(
                f"layer {hook} is out of range for a model with {n_layers} layers "
                f"(valid: 0..{n_layers - 1}, or negative from the end)"
            )
        return resid_post_hook(layer)
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name (str) or a layer index (int), got {type(hook).__name__}")
    if hook in model.hook_dict:
        return hook
    close = difflib.get_close_matches(hook, list(model.hook_dict), n=5, cutoff=0.5)
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    raise UnknownHookError(
        f"unknown hook point {hook!r} for {model.cfg.model_name} ({n_layers} layers).{hint} "
        "Residual-stream hooks look like 'blocks.{L}.hook_resid_post'; list all with model.hook_dict."
    )


def resolve_hooks(model: LensModel, hooks: HookSpec | Sequence[HookSpec]) -> list[str]:
    """Resolve one or several hooks, keeping order and dropping duplicates."""
    if isinstance(hooks, (str, int)):
        hooks = [hooks]
    if len(hooks) == 0:
        raise ValueError("no hook points given; pass e.g. ['blocks.6.hook_resid_post'] or a layer index")
    out: list[str] = []
    for h in hooks:
        name = resolve_hook(model, h)
        if name not in out:
            out.append(name)
    return out


def stop_layer_for(hooks: Sequence[str], n_layers: int) -> int | None:
    """The smallest ``stop_at_layer`` that still runs every hook in ``hooks`` (None: run it all)."""
    layers = [hook_layer(h) for h in hooks]
    known = [layer for layer in layers if layer is not None]
    if len(known) < len(layers):
        return None
    top = max(known) + 1
    return None if top >= n_layers else top
