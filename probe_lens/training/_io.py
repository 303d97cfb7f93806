"""Atomic file writes and JSONL metrics (append, flush per line).

A crash mid-write can cut off only the last line of ``metrics.jsonl``; readers skip such a line. Any
other line that is not a JSON object is corruption and raises :class:`MetricsFileError` naming the
file and the line, rather than silently losing rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probe_lens._io import atomic_write_text  # noqa: F401  (re-exported for the training modules)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class MetricsWriter:
    """Appends one JSON object per line to ``path`` and flushes it immediately."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a")  # noqa: SIM115 (kept open across writes; closed by close() / __exit__)

    def write(self, row: Mapping[str, Any]) -> None:
        self._f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MetricsFileError(ValueError):
    """A ``metrics.jsonl`` with a corrupt line other than a cut-off last one (names file and line)."""


def _metrics_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, row)`` of every row of a metrics file; a cut-off last line is skipped.

    Raises :class:`MetricsFileError` naming the file and line for any other line that is not a JSON object.
    """
    lines = [(n, raw) for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1) if raw.strip()]
    out = []
    for i, (n, raw) in enumerate(lines):
        try:
            line = raw.decode("utf-8")
            row = json.loads(line)
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
            if i == len(lines) - 1:
                continue  # the last line, cut off by a crash mid-write
            raise MetricsFileError(
                f"{path}, line {n}: corrupt ({type(e).__name__}: {e}); only a cut-off last line (a crash "
                "mid-write) is skipped. Repair or delete that line, then rerun"
            ) from e
        if not isinstance(row, dict):
            raise MetricsFileError(f"{path}, line {n}: a {type(row).__name__}, not a JSON object (one row per line)")
        out.append((line, row))
    return out


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop rows with ``step > max_step`` (rows written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = [line for line, row in _metrics_lines(path) if row.get("step", 0) <= max_step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_metrics(path: str | Path):
    """A run's ``metrics.jsonl`` (or its folder) as a pandas DataFrame, one row per logged event.

    A cut-off last line (a crash mid-write) is skipped; any other corrupt line raises
    :class:`MetricsFileError` naming the file and line.
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}; is this a probe_lens run folder?")
    return pd.DataFrame([row for _, row in _metrics_lines(path)])
