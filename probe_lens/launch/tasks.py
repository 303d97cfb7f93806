"""The study as a small task graph, and each task's state on disk.

``prepare`` (prompt plan, probe pool, every seed's split, probes, noise floor and training samples) ->
one ``cell/<cell>/seed<s>`` task per (cell, seed), independent of one another -> ``finalise`` (cells
trained but not evaluated, then results, headline and report), which refuses while a cell is missing.

Each task keeps a record in ``<run>/launch/tasks/<task>.json`` (state, pid, host, times, log path, error),
written atomically by the process that runs it; its log is ``<run>/launch/logs/<task>.log``. A cell task
is *done* when its ``eval.json`` exists, whatever its record says (the run folder is the truth).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.run_folder import RunFolder, write_json

STATES = ("pending", "running", "done", "failed")


class MissingTasksError(ValueError):
    """``finalise`` was asked for while (cell, seed) tasks have not finished."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One node of the graph: ``kind`` is ``prepare``, ``cell`` or ``finalise``."""

    kind: str
    cell: str | None = None
    seed: int | None = None

    @property
    def id(self) -> str:
        return f"cell/{self.cell}/seed{self.seed}" if self.kind == "cell" else self.kind

    @property
    def file_stem(self) -> str:
        return self.id.replace("/", "-")

    @classmethod
    def parse(cls, task_id: str, config: StudyConfig) -> Task:
        """The task named ``task_id`` (``prepare``, ``finalise`` or ``cell/<cell>/seed<s>``) of ``config``'s study."""
        if task_id in ("prepare", "finalise"):
            return cls(task_id)
        parts = task_id.split("/")
        if len(parts) == 3 and parts[0] == "cell" and parts[2].startswith("seed") and parts[2][4:].isdigit():
            task = cls("cell", parts[1], int(parts[2][4:]))
            if task in cell_tasks(config):
                return task
        raise ValueError(
            f"no task {task_id!r} in this study; its tasks are prepare, finalise and cell/<cell>/seed<s> with cells "
            f"{[c.name for c in config.cell_specs]} and seeds {config.seeds} (`probe-lens status --out RUN` lists them)"
        )


def cell_tasks(config: StudyConfig) -> list[Task]:
    """Every (cell, seed) task, seed by seed in the study's cell order (the in-process order)."""
    return [Task("cell", c.name, s) for s in config.seeds for c in config.cell_specs]


def study_tasks(config: StudyConfig) -> list[Task]:
    return [Task("prepare"), *cell_tasks(config), Task("finalise")]


class TaskBook:
    """The task records of one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.folder = RunFolder(root)

    def record_path(self, task: Task) -> Path:
        return self.root / "launch" / "tasks" / f"{task.file_stem}.json"

    def log_path(self, task: Task) -> Path:
        return self.root / "launch" / "logs" / f"{task.file_stem}.log"

    def read(self, task: Task) -> dict[str, Any] | None:
        path = self.record_path(task)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write(self, task: Task, state: str, **fields: Any) -> None:
        assert state in STATES
        record = {**(self.read(task) or {}), "task": task.id, "state": state, **fields}
        write_json(self.record_path(task), record)

    def start(self, task: Task, **fields: Any) -> None:
        prev = self.read(task) or {}
        self.write(
            task,
            "running",
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
            finished=None,
            error=None,
            attempts=int(prev.get("attempts", 0)) + 1,
            log=str(self.log_path(task)),
            slurm_job=os.environ.get("SLURM_JOB_ID"),
            **fields,
        )

    def is_done(self, task: Task, config: StudyConfig) -> bool:
        """Done by the run folder's files (a record alone does not make a task done)."""
        if task.kind == "cell":
            assert task.cell is not None and task.seed is not None
            return self.folder.is_done(task.cell, task.seed)
        rec = self.read(task)
        # a study run in one process keeps no records: its files say what was done
        by_record = rec is None or rec.get("state") == "done"
        if task.kind == "finalise":
            return by_record and (self.root / "results.csv").exists()
        if rec is None:
            return not self.missing_cells(config)
        return by_record and all(self.folder.probes(s).exists() for s in config.seeds)

    def state(self, task: Task, config: StudyConfig) -> dict[str, Any]:
        """The task's record with its state as of now: done by files; a ``running`` record whose process
        is gone from this host is ``failed`` (killed: out of memory, a signal, a pulled plug)."""
        rec = dict(self.read(task) or {"task": task.id, "state": "pending"})
        if self.is_done(task, config):
            rec["state"] = "done"
        elif rec.get("state") == "done":  # a record older than the files (e.g. a cell deleted by hand)
            rec["state"] = "pending"
        elif self._dead(rec):
            rec["state"], rec["error"] = "failed", "its process ended without a word (killed?)"
        rec.setdefault("log", str(self.log_path(task)))
        return rec

    @staticmethod
    def _dead(rec: dict[str, Any]) -> bool:
        """A ``running`` record of a process on this host (not a Slurm job) that is gone."""
        local = rec.get("host") == socket.gethostname() and not rec.get("slurm_job")
        return rec.get("state") == "running" and local and not _alive(int(rec.get("pid", -1)))

    def running_elsewhere(self, task: Task) -> dict[str, Any] | None:
        """The record of another live process on this host running ``task`` (else None)."""
        rec = self.read(task)
        if rec is None or rec.get("state") != "running" or rec.get("host") != socket.gethostname():
            return None
        pid = int(rec.get("pid", -1))
        return rec if pid != os.getpid() and not rec.get("slurm_job") and _alive(pid) else None

    def missing_cells(self, config: StudyConfig) -> list[Task]:
        return [t for t in cell_tasks(config) if not self.is_done(t, config)]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (finished, not yet reaped by its parent) is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
