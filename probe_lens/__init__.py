"""probe_lens: does a linear probe keep working when you fine-tune a model against it?

The public API is small; everything else lives in the subpackages named by what they hold:
``models`` (loading, generation), ``activations`` (hooks, pooling, capture), ``probes``,
``data``, ``scorers``, ``training``, ``experiments``.
"""

__version__ = "0.1.0"

from probe_lens.activations import capture, collect, pool, resolve_hook
from probe_lens.models import Generation, generate, load_model, tokenize_pairs

__all__ = [
    "Generation",
    "__version__",
    "capture",
    "collect",
    "generate",
    "load_model",
    "pool",
    "resolve_hook",
    "tokenize_pairs",
]
