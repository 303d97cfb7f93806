"""Loading models and sampling from them."""

from probe_lens.models.bridge import BACKENDS, LensModel, is_bridge
from probe_lens.models.compat import apply_fast_cpu_patches
from probe_lens.models.generation import Generation, generate, tokenize_pairs
from probe_lens.models.loading import (
    EMBEDDED_MODEL_NAME,
    ModelUnavailableError,
    convert_embedded_model,
    default_cache_dir,
    load_embedded_hf,
    load_model,
    model_config,
)

__all__ = [
    "BACKENDS",
    "EMBEDDED_MODEL_NAME",
    "Generation",
    "LensModel",
    "ModelUnavailableError",
    "apply_fast_cpu_patches",
    "convert_embedded_model",
    "default_cache_dir",
    "generate",
    "is_bridge",
    "load_embedded_hf",
    "load_model",
    "model_config",
    "tokenize_pairs",
]
