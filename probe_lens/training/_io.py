"""Atomic file writes and JSONL metrics (append, flush per line)."""

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


def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop rows with ``step > max_step`` (rows written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by a crash
            continue
        if row.get("step", 0) <= max_step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_metrics(path: str | Path):
    """A run's ``metrics.jsonl`` (or its folder) as a pandas DataFrame, one row per logged event."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}; is this a probe_lens run folder?")
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a last line cut off by a crash
                continue
    return pd.DataFrame(rows)
