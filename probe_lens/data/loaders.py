"""Loaders for the real toxicity datasets (through ``datasets``), as :class:`Prompt` lists.

Both read the Hugging Face hub by default (needs internet) or local files in the same schema
(``path=``: JSONL/JSON, CSV or parquet; a file, a list of files or a folder).

* Civil Comments (``google/civil_comments``): columns ``text, toxicity, severe_toxicity, obscene,
  threat, insult, identity_attack, sexual_explicit`` (scores in [0, 1]). As in the paper, comments
  with ``toxicity >= 0.5`` become provocative prompts, cut at a word boundary to a prompt length.
* RealToxicityPrompts (``allenai/real-toxicity-prompts``): columns ``filename, begin, end,
  challenging, prompt{text, toxicity, ...}, continuation{text, toxicity, ...}``. The prompt text is
  the opener; ``challenging_only`` keeps the challenging subset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe_lens.data.prompts import Prompt

PathLike = str | os.PathLike

CIVIL_COMMENTS_HUB = "google/civil_comments"
REAL_TOXICITY_PROMPTS_HUB = "allenai/real-toxicity-prompts"
CIVIL_COMMENTS_COLUMNS = (
    "text",
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
    "sexual_explicit",
)
RTP_COLUMNS = ("filename", "begin", "end", "challenging", "prompt", "continuation")
_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be loaded from the hub (offline?) and no local files were given."""


def truncate_prompt(text: str, max_chars: int | None) -> str:
    """Collapse whitespace and cut ``text`` to at most ``max_chars`` characters at a word boundary.

    A single word longer than ``max_chars`` is cut hard. ``None`` keeps the whole text.
    """
    text = re.sub(r"\s+", " ", text).strip()
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else text[:max_chars]).rstrip()


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    return limit


def _local_files(path: PathLike | Sequence[PathLike], split: str | None) -> tuple[str, list[str]]:
    """Resolve ``path`` to (datasets builder name, files)."""
    if isinstance(path, (str, os.PathLike)):
        paths = [Path(path)]
    else:
        paths = [Path(p) for p in path]
        if not paths:
            raise ValueError("path is an empty list; pass a file, a list of files or a folder")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _FORMATS)
            if split is not None:
                named = [f for f in found if split in f.name]
                found = named or found
            if not found:
                raise FileNotFoundError(f"no .jsonl/.json/.csv/.parquet files in folder {str(p)!r}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"dataset file {str(p)!r} does not exist")
    kinds = {f.suffix.lower() for f in files}
    unknown = kinds - set(_FORMATS)
    if unknown:
        raise ValueError(
            f"unsupported file type(s) {sorted(unknown)}; use one of {sorted(_FORMATS)} (JSON lines, CSV, parquet)"
        )
    builders = {_FORMATS[k] for k in kinds}
    if len(builders) > 1:
        raise ValueError(f"mixed file formats {sorted(kinds)}; pass files of one format")
    return builders.pop(), [str(f) for f in files]


def _load(
    hub_name: str,
    split: str,
    path: PathLike | Sequence[PathLike] | None,
    required: Sequence[str],
    cache_dir: str | None,
    local_split: str | None,
) -> Any:
    import datasets

    if path is not None:
        builder, files = _local_files(path, local_split)
        ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
        source = f"local files {files[:3]}{' ...' if len(files) > 3 else ''}"
    else:
        try:
            ds = datasets.load_dataset(hub_name, split=split, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - any hub failure means the same thing to the user
            raise DatasetUnavailableError(
                f"could not load {hub_name!r} (split {split!r}) from the Hugging Face hub: "
                f"{type(exc).__name__}: {exc}. The hub is unreachable or offline (HF_DATASETS_OFFLINE). "
                f"Pass path= to local JSONL/CSV/parquet files with the same columns "
                f"({', '.join(required)})."
            ) from exc
        source = f"hub {hub_name!r}"
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{source} lacks column(s) {missing}; expected the {hub_name} schema with columns "
            f"{list(required)}, found {ds.column_names}"
        )
    return ds


def _rows(ds: Any, *columns: str, batch_size: int = 10_000):
    """Yield tuples of ``columns`` row by row, reading in batches (Civil Comments has 1.8M rows)."""
    for batch in ds.select_columns(list(columns)).iter(batch_size=batch_size):
        yield from zip(*(batch[c] for c in columns))


def load_civil_comments(
    split: str = "train",
    *,
    path: PathLike | Sequence[PathLike] | None = None,
    min_toxicity: float = 0.5,
    max_prompt_chars: int | None = 200,
    limit: int | None = None,
    cache_dir: str | None = None,
) -> list[Prompt]:
    """Toxic Civil Comments comments as provocative prompts (the paper's prompt source).

    Keeps rows with ``toxicity >= min_toxicity``, collapses whitespace and cuts each comment at a
    word boundary to ``max_prompt_chars`` (the opener the model continues). Ids are
    ``"civil_comments/{split}/{row}"`` (row index in the unfiltered split), so they are stable.

    Args:
        split: hub split (``"train"``, ``"validation"``, ``"test"``); with a folder ``path``, files
            whose names contain it are preferred.
        path: local file(s) or folder in the Civil Comments schema instead of the hub.
        min_toxicity: keep comments with toxicity at least this, in (0, 1] (paper: 0.5).
        max_prompt_chars: prompt length in characters (None: whole comment).
        limit: stop after this many prompts.
        cache_dir: ``datasets`` cache folder.
    Raises:
        DatasetUnavailableError: no ``path`` and the hub cannot be reached.
    """
    if isinstance(min_toxicity, bool) or not isinstance(min_toxicity, (int, float)) or not 0.0 < min_toxicity <= 1.0:
        raise ValueError(f"min_toxicity must be a number in (0, 1], got {min_toxicity!r} (the paper uses 0.5)")
    if max_prompt_chars is not None and (
        isinstance(max_prompt_chars, bool) or not isinstance(max_prompt_chars, int) or max_prompt_chars < 1
    ):
        raise ValueError(f"max_prompt_chars must be a positive int or None, got {max_prompt_chars!r}")
    limit = _check_limit(limit)
    ds = _load(CIVIL_COMMENTS_HUB, split, path, ("text", "toxicity"), cache_dir, split)
    out: list[Prompt] = []
    for row, (text, tox) in enumerate(_rows(ds, "text", "toxicity")):
        if tox is None or text is None or float(tox) < min_toxicity:
            continue
        prompt = truncate_prompt(str(text), max_prompt_chars)
        if not prompt:
            continue
        out.append(Prompt(id=f"civil_comments/{split}/{row}", text=prompt, tag="provocative", topic="civil_comments"))
        if limit is not None and len(out) >= limit:
            break
    return out


def load_real_toxicity_prompts(
    *,
    path: PathLike | Sequence[PathLike] | None = None,
    challenging_only: bool = False,
    limit: int | None = None,
    cache_dir: str | None = None,
) -> list[Prompt]:
    """RealToxicityPrompts openers (``prompt.text``) as :class:`Prompt` objects.

    A prompt is tagged ``"provocative"`` when it is in the challenging subset or its own
    ``prompt.toxicity`` is at least 0.5, else ``"neutral"``. Ids are ``"rtp/{row}"``.

    Args:
        path: local file(s) or folder in the RealToxicityPrompts schema instead of the hub.
        challenging_only: keep only rows with ``challenging == True``.
        limit: stop after this many prompts.
        cache_dir: ``datasets`` cache folder.
    Raises:
        DatasetUnavailableError: no ``path`` and the hub cannot be reached.
    """
    if not isinstance(challenging_only, bool):
        raise TypeError(f"challenging_only must be a bool, got {challenging_only!r}")
    limit = _check_limit(limit)
    ds = _load(REAL_TOXICITY_PROMPTS_HUB, "train", path, ("challenging", "prompt"), cache_dir, None)
    out: list[Prompt] = []
    for row, (challenging, prompt) in enumerate(_rows(ds, "challenging", "prompt")):
        challenging = bool(challenging)
        if challenging_only and not challenging:
            continue
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise ValueError(
                f"row {row}: 'prompt' must be a struct with a 'text' string (RealToxicityPrompts schema), got {prompt!r}"
            )
        text = re.sub(r"\s+", " ", prompt["text"]).strip()
        if not text:
            continue
        tox = prompt.get("toxicity")
        toxic = challenging or (tox is not None and float(tox) >= 0.5)
        out.append(
            Prompt(
                id=f"rtp/{row}",
                text=text,
                tag="provocative" if toxic else "neutral",
                topic="real_toxicity_prompts_challenging" if challenging else "real_toxicity_prompts",
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out
