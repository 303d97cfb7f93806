"""Hook points, pooling and activation reading."""

from probe_lens._common import hook_layer, resid_post_hook
from probe_lens.activations.collect import capture, collect, collect_tokens, trim_left_padding
from probe_lens.activations.hooks import UnknownHookError, resolve_hook, resolve_hooks
from probe_lens.activations.pooling import POOLINGS, gather_tokens, pool

__all__ = [
    "POOLINGS",
    "UnknownHookError",
    "capture",
    "collect",
    "collect_tokens",
    "gather_tokens",
    "hook_layer",
    "pool",
    "resid_post_hook",
    "resolve_hook",
    "resolve_hooks",
    "trim_left_padding",
]
