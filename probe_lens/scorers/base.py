"""The one protocol every scorer follows: ``score(texts) -> P(positive class)`` (P(toxic) for toxicity) as float64
in [0, 1]; the one check of a scorer's output (:func:`check_scores`)."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np
from jaxtyping import Float

from probe_lens._common import check_threshold


class ScorerUnavailableError(RuntimeError):
    """An explicitly requested scorer cannot run here (missing package, weights or config)."""


class ScorerOutputError(ValueError):
    """A scorer returned unusable scores (wrong count, NaN, outside [0, 1])."""


def package_version(dist: str) -> str:
    """Installed version of distribution ``dist`` (``"unknown"`` if not installed)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Texts -> list of str, with clear errors. Empty strings are allowed (they get a score)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, got a single string; wrap it in a list")
    try:
        texts = list(texts)
    except TypeError as exc:
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}") from exc
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str; every text must be a string")
    return texts


def check_device(device: Any) -> str:
    """A torch device (string or ``torch.device``) as a canonical string, with a clear error otherwise."""
    import torch

    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from exc


def scorer_name(scorer: Any) -> str:
    """``scorer.describe()["name"]``, or the class name of a duck-typed scorer without ``describe()``."""
    try:
        return str(scorer.describe().get("name"))
    except Exception:  # a duck-typed scorer without describe()
        return type(scorer).__name__


def check_scores(raw: Any, texts: Sequence[str] | int, who: str) -> Float[np.ndarray, " n"]:
    """``raw`` as float64 [n] in [0, 1] (n: ``len(texts)``, or ``texts`` itself when an int), or a
    :class:`ScorerOutputError` naming the scorer ``who`` and what is wrong (and the first bad text, if given)."""
    n = texts if isinstance(texts, int) else len(texts)
    try:
        arr = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ScorerOutputError(f"scorer {who!r} returned something that is not a list of numbers ({e})") from e
    if arr.shape != (n,):
        raise ScorerOutputError(f"scorer {who!r} returned {arr.shape[0]} scores for {n} texts (one per text is needed)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        first = f"text {bad[0]}" if isinstance(texts, int) else f"text {bad[0]}, {texts[bad[0]][:60]!r}"
        raise ScorerOutputError(f"scorer {who!r} returned NaN/inf for {len(bad)} of {n} texts (first: {first})")
    out = np.flatnonzero((arr < 0) | (arr > 1))
    if len(out):
        raise ScorerOutputError(
            f"scorer {who!r} returned {len(out)} of {n} scores outside [0, 1] (min {arr.min():.4g}, max {arr.max():.4g}); "
            "scores must be probabilities P(toxic)"
        )
    return arr


def label(scores: Any, threshold: float = 0.5) -> np.ndarray:
    """Binary toxic labels (int64, 1 = toxic) from P(toxic): ``scores >= threshold``.

    ``threshold`` must lie strictly between 0 and 1 (the paper uses 0.5).
    """
    check_threshold(threshold)
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be 1-D (n,), got shape {arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1):
        raise ValueError("scores must be probabilities in [0, 1] without NaN")
    return (arr >= float(threshold)).astype(np.int64)


class Scorer(abc.ABC):
    """A toxicity scorer. Subclasses set ``name``/``version`` and implement ``_score``.

    ``score(texts)`` validates the input, returns ``np.float64`` P(toxic) of shape ``(len(texts),)``
    (shape ``(0,)`` for an empty list) and records nothing global; ``describe()`` says which scorer
    and version produced a result, for saving next to it.
    """

    name: str = "scorer"
    version: str = "unknown"

    def __init__(self) -> None:
        self.chosen_by: str | None = None  # "auto" when get_scorer("auto") picked this scorer
        self.choice_reason: str | None = None

    @abc.abstractmethod
    def _score(self, texts: list[str]) -> Any:
        """P(toxic) for a non-empty list of validated strings."""

    def score(self, texts: Sequence[str]) -> Float[np.ndarray, " n"]:
        """P(toxic) per text, float64 [n] in [0, 1]."""
        texts = validate_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return check_scores(self._score(texts), texts, self.name)

    def details(self) -> dict[str, Any]:
        """Backend-specific facts for :meth:`describe` (checkpoint path, model type, ...)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-ready record: ``name``, ``version``, ``details``, and how it was chosen."""
        out: dict[str, Any] = {"name": self.name, "version": self.version, "details": self.details()}
        if self.chosen_by is not None:
            out["chosen_by"] = self.chosen_by
            out["reason"] = self.choice_reason
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


class PackageScorer(Scorer):
    """A scorer backed by one pip package: subclasses set ``dist`` (the distribution: install hint and
    version) and ``module`` (what to import), and build their backend from it in :meth:`_setup`."""

    dist: str = ""
    module: str = ""

    def __init__(self) -> None:
        super().__init__()
        try:
            backend = importlib.import_module(self.module)
        except ImportError as exc:
            raise ScorerUnavailableError(
                f"the {self.name!r} scorer needs the {self.dist} package: pip install {self.dist}"
            ) from exc
        self.version = package_version(self.dist)
        self._setup(backend)

    @abc.abstractmethod
    def _setup(self, backend: Any) -> None:
        """Keep what :meth:`_score` needs from the imported ``module``."""

    @classmethod
    def available(cls) -> bool:
        """True if the backing package can be imported."""
        try:
            importlib.import_module(cls.module)
        except ImportError:
            return False
        return True

    def details(self) -> dict[str, Any]:
        return {"package": self.dist}
