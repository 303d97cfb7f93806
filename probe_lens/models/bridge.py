"""TransformerBridge as a second model backend (``load_model(..., backend="bridge")``).

TransformerLens 3.9 deprecates ``HookedTransformer`` (4.0 removes it) in favour of ``TransformerBridge``,
which wraps a Hugging Face model in place and exposes TransformerLens hook points on it. A bridge here is
booted from an HF model already in memory (``boot_transformers(..., hf_model=...)``, no hub) and put in
compatibility mode *without* weight processing, as the hooked backend loads its models
(``from_pretrained_no_processing``): hook names are TransformerLens's (``blocks.L.hook_resid_post``) and
activations equal the HF model's hidden states, so both backends give the same numbers up to fp32
rounding (``tests/unit/models/test_bridge_backend.py``).

The bridge runs HF's own modules, so it also reaches what the bridge supports and ``HookedTransformer``
does not: every HF architecture TransformerLens knows, and a model spread over several GPUs
(``device_map`` / ``n_devices``, :func:`hf_placement`).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import torch
from transformer_lens import HookedTransformer
from transformer_lens.model_bridge import TransformerBridge

from probe_lens.models.compat import finite_bridge_masks

Backend = Literal["hooked", "bridge"]
BACKENDS: tuple[str, ...] = ("hooked", "bridge")
"""Model backends ``load_model`` knows: ``"hooked"`` (``HookedTransformer``, the default) and ``"bridge"``."""

LensModel: TypeAlias = HookedTransformer | TransformerBridge
"""A model of either backend: what ``generate``, ``collect`` and ``capture`` accept."""

DeviceMap: TypeAlias = str | dict[str, str | int]


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ValueError naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown model backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def is_bridge(model: Any) -> bool:
    """Whether ``model`` (or the model a DDP wrapper holds as ``.module``) is a ``TransformerBridge``."""
    return isinstance(getattr(model, "module", model), TransformerBridge)


def hf_placement(device: str | None, device_map: DeviceMap | None, n_devices: int | None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments placing an HF model on ``device``, or on several GPUs.

    ``device_map`` (an HF map: ``"auto"``, ``"balanced"``, ``{module: device}``) is passed through;
    ``n_devices`` > 1 splits the layers evenly over GPUs 0..n-1 (TransformerLens's ``"balanced"`` map).
    Without either, ``{"device_map": None}`` and the caller moves the model to ``device``.
    """
    from transformer_lens.utilities.multi_gpu import resolve_device_map

    if n_devices is not None and (isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1):
        raise ValueError(f"n_devices must be a positive integer, got {n_devices!r}")
    if n_devices is not None and n_devices > 1:
        if device_map is not None:
            raise ValueError("pass device_map or n_devices, not both")
        visible = torch.cuda.device_count()
        if visible < n_devices:
            where = f"only {visible} CUDA device(s) are visible" if visible else "no GPU is visible (CPU only)"
            raise ValueError(
                f"n_devices={n_devices} spreads the model over {n_devices} GPUs, but {where}; "
                "on one device, drop n_devices"
            )
    if device_map is not None and device is not None:
        raise ValueError(f"pass device ({device!r}) or device_map, not both: device_map places every layer itself")
    resolved, max_memory = resolve_device_map(n_devices, device_map, None, None)
    out: dict[str, Any] = {"device_map": resolved}
    if max_memory is not None:
        out["max_memory"] = max_memory
    return out


def bridge_from_hf(tl_name: str, hf: Any, tokenizer: Any, *, device: str | None) -> TransformerBridge:
    """Boot a ``TransformerBridge`` on the HF model ``hf`` (in memory, no hub) in compatibility mode,
    without weight processing, left padding, in eval mode.

    ``device`` None leaves ``hf`` where it is (a model placed by a ``device_map``); otherwise it is moved.
    """
    tokenizer.padding_side = "left"
    placed = bool(getattr(hf, "hf_device_map", None))
    if device is not None and not placed:
        hf = hf.to(device)
    # with hf_model=..., TL picks a default device (a GPU where there is one) unless told where hf lies
    where = None if placed else str(next(hf.parameters()).device)
    return _compatible(
        TransformerBridge.boot_transformers(tl_name, hf_model=hf, tokenizer=tokenizer, device=where, dtype=hf.dtype)
    )


def bridge_from_hub(
    name: str, *, device: str | None, dtype: torch.dtype, placement: dict[str, Any]
) -> TransformerBridge:
    """Boot a ``TransformerBridge`` on the HF hub model ``name`` (needs internet or the HF cache), placed on
    ``device`` or by ``placement`` (:func:`hf_placement`), in compatibility mode without weight processing."""
    model = TransformerBridge.boot_transformers(name, device=device, dtype=dtype, **placement)
    if model.tokenizer is not None:
        model.tokenizer.padding_side = "left"
    return _compatible(model)


def _compatible(model: TransformerBridge) -> TransformerBridge:
    # no_processing: the hooked backend loads unprocessed weights too, so the numbers agree
    model.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    model.eval()
    return finite_bridge_masks(model)
