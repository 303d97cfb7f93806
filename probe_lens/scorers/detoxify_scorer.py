"""Detoxify (unitary.ai) toxicity classifier, the paper's output classifier, run locally.

The ``detoxify`` wheel holds code only: by model type it downloads its checkpoint from GitHub
releases (into torch.hub's cache) and its BERT/RoBERTa config and tokenizer from the Hugging Face
hub. Offline, pass ``checkpoint=`` (a file in detoxify's format) and ``huggingface_config_path=``
(a folder with the transformers config and tokenizer).

Security: detoxify unpickles its checkpoint (``torch.load(..., weights_only=False)``), which can run
arbitrary code. Only load checkpoints you trust (detoxify's own releases or files you made).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from probe_lens.scorers.base import Scorer, ScorerUnavailableError, check_device, package_version

# model type -> (HF repo detoxify's config names, tokenizer files it needs). From detoxify's configs.
HF_BACKBONES: dict[str, tuple[str, tuple[str, ...]]] = {
    "original": ("bert-base-uncased", ("vocab.txt",)),
    "unbiased": ("roberta-base", ("vocab.json", "merges.txt")),
    "multilingual": ("xlm-roberta-base", ("sentencepiece.bpe.model",)),
    "original-small": ("albert-base-v2", ("spiece.model",)),
    "unbiased-small": ("albert-base-v2", ("spiece.model",)),
}


def _model_urls() -> dict[str, str]:
    from detoxify.detoxify import MODEL_URLS

    return dict(MODEL_URLS)


def hub_checkpoint_path(model_type: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches detoxify's checkpoint for ``model_type``."""
    import torch

    urls = _model_urls()
    if model_type not in urls:
        raise ValueError(f"unknown detoxify model_type {model_type!r}; choose one of {sorted(urls)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(urls[model_type]).path)


def _hf_cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return isinstance(found, str) and os.path.isfile(found)


def _availability(
    model_type: str, checkpoint: str | os.PathLike | None, huggingface_config_path: str | os.PathLike | None
) -> tuple[bool, str]:
    """(available offline?, what is there or what is missing)."""
    try:
        import detoxify  # noqa: F401
    except ImportError:
        return False, "the detoxify package is not installed (pip install detoxify)"
    if huggingface_config_path is not None:
        cfg_dir = Path(huggingface_config_path)
        if not (cfg_dir / "config.json").is_file():
            return (
                False,
                f"huggingface_config_path {str(cfg_dir)!r} has no config.json (save config and tokenizer there)",
            )
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            return False, f"checkpoint file {str(checkpoint)!r} does not exist"
        return True, f"local checkpoint {str(checkpoint)!r}"
    ckpt = hub_checkpoint_path(model_type)
    if not ckpt.is_file():
        return False, (
            f"detoxify's {model_type!r} checkpoint is not in the torch hub cache ({ckpt}); it is downloaded "
            "from GitHub on first use"
        )
    repo, tok_files = HF_BACKBONES[model_type]
    # detoxify always reads the backbone config by name, even with huggingface_config_path.
    if not _hf_cached(repo, "config.json"):
        return False, f"the {repo!r} config is not in the Hugging Face cache"
    if huggingface_config_path is None:
        missing = [f for f in tok_files if not _hf_cached(repo, f)]
        if missing:
            return False, f"the {repo!r} tokenizer files {missing} are not in the Hugging Face cache"
    return True, f"cached {model_type!r} checkpoint {ckpt.name} and {repo!r} config"


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class DetoxifyScorer(Scorer):
    """P(toxic) = Detoxify's ``"toxicity"`` head.

    Args:
        model_type: ``"original"`` (BERT, Jigsaw 2018), ``"unbiased"``, ``"multilingual"``,
            ``"original-small"``, ``"unbiased-small"``; ignored when ``checkpoint`` is given.
        checkpoint: local checkpoint file in detoxify's format (``{"config": ..., "state_dict": ...}``).
            Unpickled: trusted files only.
        huggingface_config_path: folder with the backbone's transformers config and tokenizer
            (for offline use with ``checkpoint``).
        device: torch device to run on (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default ``"cpu"``).
        batch_size: texts per forward pass.
        allow_download: if the weights are not available locally, let detoxify download them
            (GitHub + Hugging Face hub). Off by default: then a missing model is an error.
    Raises:
        ScorerUnavailableError: weights/config not available locally and ``allow_download`` is False,
            or a CUDA device was asked for and there is none.
    """

    name = "detoxify"

    def __init__(
        self,
        model_type: str = "original",
        *,
        checkpoint: str | os.PathLike | None = None,
        huggingface_config_path: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        import torch

        device = check_device(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ScorerUnavailableError(f"Detoxify on device={device!r}: CUDA is not available here; use device='cpu'")
        if checkpoint is None and model_type not in HF_BACKBONES:
            raise ValueError(f"unknown detoxify model_type {model_type!r}; choose one of {sorted(HF_BACKBONES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        ok, reason = _availability(model_type, checkpoint, huggingface_config_path)
        if not ok and not allow_download:
            raise ScorerUnavailableError(
                f"Detoxify is not available offline: {reason}. Either pass checkpoint=<detoxify .ckpt> and "
                "huggingface_config_path=<folder with the backbone config + tokenizer>, or pass "
                "allow_download=True (needs internet: GitHub releases + Hugging Face hub), or use "
                "get_scorer('profanity')."
            )
        from detoxify import Detoxify

        self.model_type = None if checkpoint is not None else model_type
        self.checkpoint = None if checkpoint is None else str(Path(checkpoint).resolve())
        self.huggingface_config_path = (
            None if huggingface_config_path is None else str(Path(huggingface_config_path).resolve())
        )
        self.device = device
        self.batch_size = batch_size
        self.version = package_version("detoxify")
        self._model = Detoxify(
            model_type=model_type,
            checkpoint=self.checkpoint,
            device=device,
            huggingface_config_path=self.huggingface_config_path,
        )
        if "toxicity" not in self._model.class_names:
            raise ValueError(f"the detoxify checkpoint has no 'toxicity' head (classes: {self._model.class_names})")
        if self.checkpoint is not None:
            self._checkpoint_id = "sha256:" + _sha256(Path(self.checkpoint))
        else:
            self._checkpoint_id = hub_checkpoint_path(model_type).name

    @staticmethod
    def available(
        model_type: str = "original",
        *,
        checkpoint: str | os.PathLike | None = None,
        huggingface_config_path: str | os.PathLike | None = None,
    ) -> bool:
        """True if this Detoxify model can load without downloading anything.

        With ``checkpoint``: the file exists (and ``huggingface_config_path``, if given, has a
        config.json). The checkpoint's backbone name is not checked, since reading it means
        unpickling; pass ``huggingface_config_path`` for offline use. Without: detoxify's checkpoint
        is in torch.hub's cache and the backbone config/tokenizer in the Hugging Face cache.
        """
        return DetoxifyScorer.why(model_type, checkpoint=checkpoint, huggingface_config_path=huggingface_config_path)[0]

    @staticmethod
    def why(
        model_type: str = "original",
        *,
        checkpoint: str | os.PathLike | None = None,
        huggingface_config_path: str | os.PathLike | None = None,
    ) -> tuple[bool, str]:
        """Like :meth:`available`, with a sentence saying what was found or what is missing."""
        if checkpoint is None and model_type not in HF_BACKBONES:
            raise ValueError(f"unknown detoxify model_type {model_type!r}; choose one of {sorted(HF_BACKBONES)}")
        return _availability(model_type, checkpoint, huggingface_config_path)

    @property
    def class_names(self) -> list[str]:
        return list(self._model.class_names)

    def _score(self, texts: list[str]) -> np.ndarray:
        head = self._model.class_names.index("toxicity")
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            scores = self._model.predict(batch)[self._model.class_names[head]]
            out.append(np.atleast_1d(np.asarray(scores, dtype=np.float64)))
        return np.concatenate(out)

    def details(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "checkpoint": self.checkpoint,
            "checkpoint_id": self._checkpoint_id,
            "huggingface_config_path": self.huggingface_config_path,
            "head": "toxicity",
            "device": str(self.device),
        }
