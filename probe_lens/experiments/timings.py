"""The study's clock: seconds per step (``<step>_s``, summed over calls) and the study's total time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Clock:
    """Wall time per study step, from this object's first timed step on."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t_first: float | None = None  # when the first timed step began (for total_s)

    def start(self) -> None:
        """Mark the study's start (the first call counts)."""
        if self._t_first is None:
            self._t_first = time.perf_counter()

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the time the block takes to ``timings[key]``."""
        t0 = time.perf_counter()
        yield  # a step that raises is not timed
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def stop(self) -> None:
        """Record ``total_s``: the time since :meth:`start`."""
        assert self._t_first is not None  # set by start()
        self.timings["total_s"] = time.perf_counter() - self._t_first
