"""A behaviour from a small JSON/YAML file (``probe-lens ... --behaviour-file PATH``, ``behaviour_file:``).

Two forms, paths relative to the file's folder::

    # prompts + a registered scorer (Behaviour.from_jsonl)
    name: complaints
    positive_label: negative
    negative_label: not negative
    prompts: complaints_prompts.jsonl     # {"text", "tag", "id"?, "topic"?} per line
    scorer: vader                         # a name from probe_lens.scorers.SCORERS
    curated: complaints_curated.jsonl     # optional: {"text", "label", "kind"?, "topic"?, "id"?}
    threshold: 0.5                        # optional

    # pre-labelled rows, no scorer (Behaviour.from_labelled_jsonl)
    name: rude_replies
    positive_label: rude
    negative_label: polite
    labelled: rude_rows.jsonl             # {"prompt", "response", "label", "tag"?, "topic"?} per line

Optional in both: ``metric_prefix``, ``provocative_tag``, ``neutral_tag``, ``curated_prompt``,
``description``; ``scorer_kwargs`` with ``scorer``. A scorer object (any class following the
``Scorer`` protocol) cannot be named in a file: build the behaviour in Python with
``Behaviour.from_jsonl(..., scorer=obj)`` and ``register_behaviour`` it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probe_lens.behaviours._jsonl import BehaviourFileError, read_text
from probe_lens.behaviours.base import Behaviour

_COMMON = (
    "name",
    "positive_label",
    "negative_label",
    "curated",
    "metric_prefix",
    "provocative_tag",
    "neutral_tag",
    "curated_prompt",
    "description",
)
_WITH_SCORER = ("prompts", "scorer", "scorer_kwargs", "threshold")
_LABELLED = ("labelled",)


def load_behaviour_file(path: str | Path) -> Behaviour:
    """The :class:`Behaviour` a JSON/YAML spec describes (its data files read and checked now).

    Raises:
        FileNotFoundError: the spec or a file it names is missing.
        BehaviourFileError: the spec or a data file is malformed (the message names the file and key/line).
    """
    text, source = read_text(path)
    spec = _parse(text, source)
    unknown = sorted(set(spec) - set(_COMMON) - set(_WITH_SCORER) - set(_LABELLED))
    if unknown:
        raise BehaviourFileError(
            f"{source}: unknown key(s) {unknown}; a behaviour file has {list(_COMMON)}, and either "
            f"{list(_WITH_SCORER)} (prompts + scorer) or 'labelled' (pre-labelled rows)"
        )
    missing = [k for k in ("name", "positive_label", "negative_label") if k not in spec]
    if missing:
        raise BehaviourFileError(f"{source}: missing key(s) {missing}")
    if ("labelled" in spec) == ("prompts" in spec):
        raise BehaviourFileError(
            f"{source}: give either 'prompts' (with 'scorer') or 'labelled' (pre-labelled rows), not "
            f"{'both' if 'labelled' in spec else 'neither'}"
        )
    folder = Path(source).parent

    def path_of(key: str) -> Path | None:
        value = spec.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise BehaviourFileError(f"{source}: {key!r} must be a path (relative to the file's folder), got {value!r}")
        return folder / value

    def required_path(key: str) -> Path:
        path = path_of(key)
        if path is None:
            raise BehaviourFileError(f"{source}: {key!r} must be a path (relative to the file's folder), got None")
        return path

    common = {k: spec[k] for k in _COMMON if k in spec and k not in ("name", "curated")}
    try:
        if "labelled" in spec:
            extra = sorted(set(spec) & set(_WITH_SCORER))
            if extra:
                raise BehaviourFileError(
                    f"{source}: {extra} do not apply to pre-labelled rows (the labels are the scores, threshold 0.5)"
                )
            return Behaviour.from_labelled_jsonl(
                spec["name"], required_path("labelled"), curated_path=path_of("curated"), **common
            )
        if "scorer" not in spec:
            raise BehaviourFileError(
                f"{source}: 'prompts' needs a 'scorer' (a registered name, e.g. 'vader'), or give pre-labelled "
                "rows under 'labelled' instead"
            )
        if not isinstance(spec["scorer"], str):
            raise BehaviourFileError(f"{source}: 'scorer' must be a registered scorer name, got {spec['scorer']!r}")
        return Behaviour.from_jsonl(
            spec["name"],
            required_path("prompts"),
            scorer=spec["scorer"],
            scorer_kwargs=spec.get("scorer_kwargs"),
            curated_path=path_of("curated"),
            threshold=spec.get("threshold", 0.5),
            **common,
        )
    except BehaviourFileError:
        raise
    except (TypeError, ValueError) as exc:  # the Behaviour's own checks: say which file they came from
        raise BehaviourFileError(f"{source}: {exc}") from exc


def _parse(text: str, source: str) -> dict[str, Any]:
    if source.endswith((".yaml", ".yml")):
        import yaml

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BehaviourFileError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from exc
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BehaviourFileError(
                f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}); name a YAML file *.yaml"
            ) from exc
    if not isinstance(spec, dict):
        raise BehaviourFileError(f"{source}: expected a mapping of keys, got {type(spec).__name__}")
    return spec
