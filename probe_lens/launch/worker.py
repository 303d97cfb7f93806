"""Run one task of a study's graph in this process: ``python -m probe_lens.launch.worker --out RUN --task ID``.

Every executor ends here: the local executor's worker processes call :func:`run_task`, a Slurm job runs it
(under ``torchrun`` for a multi-GPU task: every rank runs the same task, as ``Study`` expects). The study
is the one in ``RUN/study.json``; it is always opened with ``resume=True``, so a task that is rerun (after a
failure, a kill, a preemption) continues from what its last attempt left: a training cell from its
latest checkpoint.

What a task writes: its own record and log (``launch/``), and the files its step writes (``prepare``: the
shared data, probes and per-seed files; a cell task: ``cells/<cell>/seed<s>/`` and the seed's derived files,
each written atomically; ``finalise``: the tables and report). Two cell tasks never write the same cell.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from probe_lens.experiments.config import StudyConfig
from probe_lens.launch import tracking
from probe_lens.launch.tasks import MissingTasksError, Task, TaskBook

log = logging.getLogger(__name__)


def import_plugins(plugins: list[str]) -> None:
    """Import each plugin (a module name or a ``.py`` file): the registrations a study's config names."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = Path(plugin)
            if path.stem in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"plugin {plugin}: not an importable .py file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            importlib.import_module(plugin)


def open_study(out: Path, *, progress: bool = False, export_png: bool = False):
    """The study saved in ``out`` (its ``study.json``), opened to resume, without the run folder's writer lock:
    the launching coordinator holds it (local executor) or has exited (Slurm), and one process per task is
    enforced by the task records, each task writing only its own cell folder and record."""
    from probe_lens.experiments import Study

    config = StudyConfig.load(Path(out) / "study.json")
    return Study(config, out, resume=True, progress=progress, export_png=export_png, lock=False)


def prepare(study) -> None:
    """Everything the cells share: prompt plan, probe pool, and per seed the split, probes, noise floor and
    training samples (so no two cell tasks of a seed build them at once)."""
    study.check_disk()
    study.build_data()
    for seed in study.config.seeds:
        study.fit_probes(seed)
        study.noise_floor(seed)
        study.train_data(seed)


def finalise(study, book: TaskBook):
    """Evaluate cells trained but not evaluated, then refuse while a cell is missing (naming it), else report."""
    study.evaluate_pending()
    missing = book.missing_cells(study.config)
    if missing:
        raise MissingTasksError(
            f"{len(missing)} task(s) have not finished, so no headline is written: "
            f"{', '.join(t.id for t in missing)}. See `probe-lens status --out {book.root}`; rerun one with "
            f"`probe-lens task --out {book.root} ID`"
        )
    summary = study.report()
    tracking.log_headline(study.config, book.root, study.report_figures)
    return summary


@contextlib.contextmanager
def _task_log(path: Path) -> Iterator[None]:
    """The task's log file gets this process's log records (warnings and above from the library) while it runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_task(
    out: str | Path,
    task_id: str,
    *,
    plugins: list[str] | None = None,
    threads: int | None = None,
    export_png: bool = False,
    study=None,
):
    """Run task ``task_id`` of the study in ``out``, recording its state; returns what the step returns
    (``finalise``: the summary table). ``study``: an open :class:`Study` to use instead of opening one."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    import_plugins(plugins or [])
    out = Path(out)
    book = TaskBook(out)
    config = study.config if study is not None else StudyConfig.load(out / "study.json")
    task = Task.parse(task_id, config)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    busy = book.running_elsewhere(task)
    if busy is not None:
        raise ValueError(
            f"task {task.id} is running already (pid {busy['pid']} on {busy['host']}); two runs of one task would "
            f"write the same files. Wait for it (probe-lens status --out {out}) or stop that process first"
        )
    if rank0:
        book.start(task, threads=torch.get_num_threads())
    with _task_log(book.log_path(task)):
        try:
            study = study if study is not None else open_study(out, export_png=export_png)
            result = _step(study, book, task)
        except BaseException as e:
            if rank0:
                logging.getLogger().error("task %s failed:\n%s", task.id, traceback.format_exc())
                book.write(task, "failed", finished=time.time(), error=f"{type(e).__name__}: {e}")
            raise
    if rank0:
        book.write(task, "done", finished=time.time())
    return result


def _step(study, book: TaskBook, task: Task):
    if task.kind == "prepare":
        return prepare(study)
    if task.kind == "finalise":
        return finalise(study, book)
    assert task.cell is not None and task.seed is not None
    result = study.run_cell(task.cell, task.seed)
    if study.dist.is_main:
        tracking.log_cell(study.config, book.root, task.cell, task.seed)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m probe_lens.launch.worker", description="run one task of a study")
    p.add_argument("--out", required=True, help="the run folder (holds study.json)")
    p.add_argument("--task", required=True, help="prepare | finalise | cell/<cell>/seed<s>")
    p.add_argument("--plugin", dest="plugins", action="append", default=[])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_task(args.out, args.task, plugins=args.plugins, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
