"""Validated JSONL readers for a behaviour's files: every error names the file, the line and the fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probe_lens.data.curated import GENERIC_KIND_LABELS, CuratedText
from probe_lens.data.prompts import Prompt


class BehaviourFileError(ValueError):
    """A behaviour's JSONL file is malformed; the message says ``file:line: what is wrong``."""


def read_text(path: str | Path) -> tuple[str, str]:
    """``(text, source)`` of a UTF-8 file, with a clear error if it is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {str(p)!r}")
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except UnicodeDecodeError as exc:
        raise BehaviourFileError(f"{p}: not UTF-8 text ({exc})") from exc


MAX_LINE_CHARS = 20_000
"""A row is a prompt and a short response: a longer line is a mistake (refused before it is parsed)."""


def json_objects(text: str, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; malformed lines raise :class:`BehaviourFileError`."""
    seen = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            raise BehaviourFileError(
                f"{source}:{lineno}: the line is {len(line):,} characters long, over the limit of {MAX_LINE_CHARS:,}; "
                "a row holds one prompt and one short response (split or shorten it)"
            )
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BehaviourFileError(f"{source}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise BehaviourFileError(f"{source}:{lineno}: expected a JSON object {{...}}, got {type(obj).__name__}")
        seen = True
        yield lineno, obj
    if not seen:
        raise BehaviourFileError(f"{source}: holds no rows (one JSON object per line expected)")


def check_keys(obj: dict[str, Any], where: str, *, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    schema = f"a row has {list(required)} and optionally {list(optional)}"
    missing = [k for k in required if k not in obj]
    if missing:
        raise BehaviourFileError(f"{where}: missing key(s) {missing}; {schema}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise BehaviourFileError(f"{where}: unknown key(s) {unknown}; {schema}")


def string(obj: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise BehaviourFileError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def binary_label(obj: dict[str, Any], where: str) -> int:
    value = obj.get("label")
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise BehaviourFileError(f"{where}: 'label' must be 0 or 1 (1 = the behaviour is present), got {value!r}")
    return int(value)


def unique_ids(ids: list[tuple[str, int]], source: str) -> None:
    first: dict[str, int] = {}
    for id_, lineno in ids:
        if id_ in first:
            raise BehaviourFileError(f"{source}:{lineno}: id {id_!r} repeats line {first[id_]}; ids must be unique")
        first[id_] = lineno


def read_prompts(
    text: str, source: str, *, provocative_tag: str = "provocative", neutral_tag: str = "neutral", id_prefix: str = "p"
) -> list[Prompt]:
    """Prompt rows ``{"text", "tag", "id"?, "topic"?}``; the file's tags map to ``provocative`` / ``neutral``.

    A missing id becomes ``f"{id_prefix}{line:05d}"``, a missing topic ``"none"``.
    """
    tags = {provocative_tag: "provocative", neutral_tag: "neutral"}
    rows: list[Prompt] = []
    ids: list[tuple[str, int]] = []
    for lineno, obj in json_objects(text, source):
        where = f"{source}:{lineno}"
        check_keys(obj, where, required=("text", "tag"), optional=("id", "topic"))
        tag = obj["tag"]
        if tag not in tags:
            raise BehaviourFileError(
                f"{where}: tag {tag!r} is neither {provocative_tag!r} (invites the behaviour) nor {neutral_tag!r}"
            )
        prompt = Prompt(
            id=string(obj, "id", where, default=f"{id_prefix}{lineno:05d}"),
            text=string(obj, "text", where),
            tag=tags[tag],
            topic=string(obj, "topic", where, default="none"),
        )
        rows.append(prompt)
        ids.append((prompt.id, lineno))
    unique_ids(ids, source)
    if not any(p.tag == "provocative" for p in rows):
        raise BehaviourFileError(
            f"{source}: no prompt is tagged {provocative_tag!r}; the behaviour needs prompts that invite it"
        )
    return rows


def read_curated(text: str, source: str, *, id_prefix: str = "c") -> list[CuratedText]:
    """Curated rows ``{"text", "label", "kind"?, "topic"?, "id"?}``, both labels present.

    A missing kind becomes ``"positive"`` (label 1) or ``"clean"`` (label 0); a kind may also tag a
    hard row (``implicit``, ``lexical_trap``, ``matched_negative``); see
    :data:`probe_lens.data.curated.GENERIC_KIND_LABELS`.
    """
    rows: list[CuratedText] = []
    ids: list[tuple[str, int]] = []
    for lineno, obj in json_objects(text, source):
        where = f"{source}:{lineno}"
        check_keys(obj, where, required=("text", "label"), optional=("id", "kind", "topic"))
        label = binary_label(obj, where)
        kind = obj.get("kind", "positive" if label else "clean")
        try:
            row = CuratedText(
                id=string(obj, "id", where, default=f"{id_prefix}{lineno:05d}"),
                text=string(obj, "text", where),
                label=label,
                kind=kind,
                topic=string(obj, "topic", where, default="none"),
            )
        except (TypeError, ValueError) as exc:
            raise BehaviourFileError(f"{where}: {exc} (kinds for your own set: {dict(GENERIC_KIND_LABELS)})") from exc
        rows.append(row)
        ids.append((row.id, lineno))
    unique_ids(ids, source)
    if len({r.label for r in rows}) < 2:
        raise BehaviourFileError(f"{source}: every row has label {rows[0].label}; a curated set needs both labels")
    return rows


def read_labelled(
    text: str, source: str, *, provocative_tag: str = "provocative", neutral_tag: str = "neutral"
) -> list[dict[str, Any]]:
    """Pre-labelled rows ``{"prompt", "response", "label", "tag"?, "topic"?}`` as checked dicts.

    A missing tag means ``provocative_tag``; the tag is returned mapped to ``provocative`` / ``neutral``.
    """
    tags = {provocative_tag: "provocative", neutral_tag: "neutral"}
    out: list[dict[str, Any]] = []
    first: dict[tuple[str, str], tuple[int, int]] = {}
    for lineno, obj in json_objects(text, source):
        where = f"{source}:{lineno}"
        check_keys(obj, where, required=("prompt", "response", "label"), optional=("tag", "topic"))
        prompt = string(obj, "prompt", where)
        response = obj["response"]
        if not isinstance(response, str):
            raise BehaviourFileError(f"{where}: 'response' must be a string, got {response!r}")
        label = binary_label(obj, where)
        tag = obj.get("tag", provocative_tag)
        if tag not in tags:
            raise BehaviourFileError(f"{where}: tag {tag!r} is neither {provocative_tag!r} nor {neutral_tag!r}")
        key = (prompt, response)
        if key in first and first[key][1] != label:
            raise BehaviourFileError(
                f"{where}: this (prompt, response) pair has label {label} here but {first[key][1]} on line {first[key][0]}"
            )
        first.setdefault(key, (lineno, label))
        out.append(
            {
                "prompt": prompt,
                "response": response,
                "label": label,
                "tag": tags[tag],
                "topic": string(obj, "topic", where, default="none"),
                "line": lineno,
            }
        )
    return out
