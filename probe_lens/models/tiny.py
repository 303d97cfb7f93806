"""A tiny, randomly initialised, Gemma-shaped HookedTransformer with a real offline tokenizer.

Used by the test-suite, by ``load_model("probe-lens-tiny")`` and by anyone who wants to exercise the
library in seconds. It has the same architecture family as Gemma-3 (RMSNorm, rotary, gated MLP,
grouped-query attention), so code paths that matter for the embedded model are exercised here too.

:func:`tiny_bridge` is its ``TransformerBridge`` counterpart (``load_model("probe-lens-tiny",
backend="bridge")``): a random-init HF ``Gemma3ForCausalLM`` of the same shapes and tokenizer. It is a
*different* random model (HF Gemma-3 also has QK-norm, sandwich norms and a scaled embedding), so its
outputs do not equal the hooked tiny model's; backend equality is tested on the embedded model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from probe_lens.models.bridge import bridge_from_hf
from probe_lens.models.compat import apply_fast_cpu_patches, quiet_tl_deprecation

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import Gemma3TextConfig

TINY_MODEL_NAME = "probe-lens-tiny"
"""``load_model`` name of the random-init tiny test model (``"probe-lens-tiny:4"``: 4 layers)."""

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


@functools.lru_cache(maxsize=1)
def _byte_level_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bos_id = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    return tok.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (259 tokens: pad, bos, eos + 256 bytes), left padding, fully offline."""
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_level_tokenizer_json()),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        padding_side="left",
        add_bos_token=True,
    )
    tok.model_max_length = 10_000
    # TransformerLens reads these when it decides whether to rebuild the tokenizer with a BOS.
    tok.init_kwargs["name_or_path"] = TINY_MODEL_NAME
    tok.init_kwargs["add_bos_token"] = True
    return tok


def tiny_config(
    *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256, seed: int = 0
) -> HookedTransformerConfig:
    """Config of the tiny Gemma-shaped model (RMSNorm, rotary, gated MLP, 2 KV heads)."""
    return HookedTransformerConfig(
        model_name=TINY_MODEL_NAME,
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_key_value_heads=max(1, n_heads // 2),
        d_mlp=2 * d_model,
        d_vocab=len(SPECIAL_TOKENS) + 256,
        n_ctx=n_ctx,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_model // n_heads,
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=True,
        seed=seed,
        device="cpu",
    )


def tiny_model(
    seed: int = 0, *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256
) -> HookedTransformer:
    """A random-init tiny HookedTransformer with :func:`tiny_tokenizer`, deterministic in ``seed``."""
    cfg = tiny_config(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx, seed=seed)
    torch.manual_seed(seed)
    with quiet_tl_deprecation():
        model = HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="left")
    model.eval()
    return apply_fast_cpu_patches(model)


def tiny_hf_config(*, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256) -> Gemma3TextConfig:
    """An HF Gemma-3 text config with :func:`tiny_config`'s shapes (attention scale 1/sqrt(d_head))."""
    from transformers import Gemma3TextConfig

    d_head = d_model // n_heads
    return Gemma3TextConfig(
        architectures=["Gemma3ForCausalLM"],  # how TransformerBridge picks its architecture adapter
        vocab_size=len(SPECIAL_TOKENS) + 256,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        head_dim=d_head,
        query_pre_attn_scalar=d_head,
        max_position_embeddings=n_ctx,
        sliding_window=n_ctx,
        hidden_activation="gelu_pytorch_tanh",
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=SPECIAL_TOKENS.index("<bos>"),
        eos_token_id=SPECIAL_TOKENS.index("<eos>"),
    )


def tiny_bridge(
    seed: int = 0, *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256
) -> TransformerBridge:
    """A random-init tiny HF Gemma-3 behind a ``TransformerBridge`` (compatibility mode, :func:`tiny_tokenizer`),
    deterministic in ``seed``; offline."""
    from transformers import Gemma3ForCausalLM

    cfg = tiny_hf_config(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx)
    torch.manual_seed(seed)
    hf = Gemma3ForCausalLM(cfg).eval()
    return bridge_from_hf(TINY_MODEL_NAME, hf, tiny_tokenizer(), device="cpu")
