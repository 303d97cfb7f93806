"""Executors of the study's task graph: ``inprocess`` (today's run), ``local`` (worker processes on this
machine) and ``submitit`` (a Slurm job array, then the finalise job once the array has finished).

Each is registered by name in ``EXECUTORS`` and called as ``executor(study, plugins) -> summary | None``
(None: submitted, not finished). The coordinator (this process) opens the study, which writes
``study.json``; the tasks then run where the executor puts them, each writing only its own files.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probe_lens._registry import Registry
from probe_lens.experiments.config import LaunchSetup
from probe_lens.launch import tracking
from probe_lens.launch.tasks import Task, TaskBook, cell_tasks
from probe_lens.launch.worker import run_task

Executor = Callable[..., Any]
EXECUTORS: Registry[Executor] = Registry("executor", hint="Add one with EXECUTORS.register(name, fn).")


class ClusterUnavailableError(ValueError):
    """The submitit executor was asked for without submitit installed (or without Slurm)."""


class TasksFailedError(ValueError):
    """Some tasks failed; the message names each with its log."""


def run_inprocess(study, plugins: list[str]):
    """Today's run: every step in this process (:meth:`Study.run`), then each cell to the tracker."""
    summary = study.run()
    if study.dist.is_main and study.config.launch.log != "none":
        for spec in study.config.cell_specs:
            for seed in study.config.seeds:
                tracking.log_cell(study.config, study.out, spec.name, seed)
        tracking.log_headline(study.config, study.out, study.report_figures)
    return summary


def worker_threads(setup: LaunchSetup) -> int:
    return setup.threads_per_worker or max(1, (os.cpu_count() or 1) // setup.workers)


def run_local(study, plugins: list[str]):
    """``prepare``, then every unfinished (cell, seed) task, each in its own fresh worker process
    (``python -m probe_lens.launch.worker``), at most ``launch.workers`` at once, then ``finalise`` here.
    A failed or killed task does not stop the others; the run then stops before ``finalise``, naming every
    failed task and its log."""
    setup, out = study.config.launch, study.out
    book = TaskBook(out)
    argv = ["--out", str(out), "--threads", str(worker_threads(setup))]
    for p in plugins:
        argv += ["--plugin", str(Path(p).resolve()) if p.endswith(".py") else p]
    if not book.is_done(Task("prepare"), study.config) and _run_processes([Task("prepare")], argv, 1, book):
        raise TasksFailedError(_failed_message(book, [Task("prepare")]))
    todo = [t for t in cell_tasks(study.config) if not book.is_done(t, study.config)]
    failed = _run_processes(todo, argv, setup.workers, book)
    if failed:
        raise TasksFailedError(_failed_message(book, failed))
    return run_task(out, "finalise", plugins=list(plugins), study=study)


def _run_processes(tasks: list[Task], argv: list[str], workers: int, book: TaskBook) -> list[Task]:
    """Run each task in a worker process, ``workers`` at a time; returns the tasks that failed."""
    import subprocess
    import time

    from tqdm.auto import tqdm

    queue, failed = list(tasks), []
    running: dict[Task, subprocess.Popen] = {}
    with tqdm(total=len(tasks), desc="study tasks", disable=len(tasks) < 2) as bar:
        while queue or running:
            while queue and len(running) < workers:
                t = queue.pop(0)
                log = book.log_path(t).with_suffix(".out")
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "ab") as f:
                    cmd = [sys.executable, "-m", "probe_lens.launch.worker", *argv, "--task", t.id]
                    running[t] = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
            for t, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[t]
                bar.update(1)
                if code != 0:
                    failed.append(t)
                    if (book.read(t) or {}).get("state") != "failed":  # killed: the worker wrote no word
                        book.write(t, "failed", error=f"worker process exited with {_exit_text(code)}")
            time.sleep(0.2)
    return failed


def _exit_text(code: int) -> str:
    import signal

    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def _failed_message(book: TaskBook, failed: list[Task]) -> str:
    lines = [f"{len(failed)} task(s) failed; the others are kept. Each, its error and logs:"]
    for t in failed:
        rec = book.read(t) or {}
        logs = f"{book.log_path(t)}, {book.log_path(t).with_suffix('.out')}"
        lines.append(f"  {t.id}: {rec.get('error', 'unknown error')} (logs: {logs})")
    lines.append(
        f"Rerun one alone with `probe-lens task --out {book.root} ID`, then `probe-lens task --out {book.root} finalise`"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- Slurm


def torchrun_prefix(gpus: int) -> str | None:
    """The launch of a task on ``gpus`` GPUs: ``torchrun`` on one node for more than one, else None."""
    return f"torchrun --standalone --nproc_per_node={gpus}" if gpus > 1 else None


def slurm_parameters(setup: LaunchSetup, *, setup_lines: list[str] | None = None) -> dict[str, Any]:
    """submitit's Slurm parameters for one (cell, seed) task of ``setup``."""
    lines = list(setup.setup_lines if setup_lines is None else setup_lines)
    prefix = torchrun_prefix(setup.gpus_per_task)
    if prefix:  # the callable reads it and runs the task under torchrun (see SlurmTask)
        lines.append(f"export PROBE_LENS_TORCHRUN={shlex.quote(prefix)}")
    extra: dict[str, Any] = {}
    for line in setup.sbatch_lines:
        key, _, value = line[2:].partition("=")
        extra[key.replace("-", "_")] = value or True
    params: dict[str, Any] = {
        "gpus_per_node": setup.gpus_per_task,
        "cpus_per_task": setup.cpus_per_task,
        "mem": f"{setup.mem_gb}GB",
        "time": setup.time_min,
        "ntasks_per_node": 1,
        "nodes": 1,
        "signal_delay_s": 120,
        "array_parallelism": setup.array_parallelism,
        "setup": lines,
        "additional_parameters": extra,
    }
    if setup.partition:
        params["partition"] = setup.partition
    return params


class SlurmTask:
    """One task as a submitit callable, requeued on preemption or time-out (``checkpoint``): the resubmitted
    task resumes from the run folder (a training cell from its latest checkpoint)."""

    def __init__(self, out: str, task_id: str, plugins: list[str]) -> None:
        self.out, self.task_id, self.plugins = out, task_id, plugins

    def __call__(self) -> None:
        prefix = os.environ.get("PROBE_LENS_TORCHRUN")
        if prefix:  # every rank runs the same task (Study is torchrun-aware)
            import subprocess

            cmd = [*shlex.split(prefix), "-m", "probe_lens.launch.worker", "--out", self.out, "--task", self.task_id]
            for p in self.plugins:
                cmd += ["--plugin", p]
            subprocess.run(cmd, check=True)
        else:
            run_task(self.out, self.task_id, plugins=self.plugins)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmTask(self.out, self.task_id, self.plugins))


def _submitit():
    try:
        import submitit
    except ImportError as e:
        raise ClusterUnavailableError(
            "--executor submitit needs submitit: pip install 'probe-lens[cluster]' (or use --executor local)"
        ) from e
    return submitit


def sbatch_script(setup: LaunchSetup, folder: Path, *, command: str | None = None) -> str:
    """The sbatch script submitit writes for one task of ``setup`` (to read and check; submits nothing)."""
    from submitit.slurm.slurm import _make_sbatch_string

    _submitit()
    params = slurm_parameters(setup)
    params.pop("array_parallelism")
    params["additional_parameters"] = params.pop("additional_parameters")
    cmd = command or " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=cmd, folder=str(folder), **params)


def run_submitit(study, plugins: list[str]):
    """Submit ``prepare``, then the unfinished (cell, seed) tasks as one job array depending on it, then
    ``finalise`` depending on the array; returns None (the jobs run on; `probe-lens status` follows them)."""
    submitit = _submitit()
    setup, out = study.config.launch, study.out
    book = TaskBook(out)
    folder = Path(out) / "launch" / "slurm" / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    if ex.cluster != "slurm":
        raise ClusterUnavailableError("--executor submitit found no Slurm here (no sbatch); use --executor local")
    params = slurm_parameters(setup)
    ex.update_parameters(
        job_name=f"probe-lens-{Path(out).resolve().name}", **{f"slurm_{k}": v for k, v in params.items()}
    )
    plug = [str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins]
    after: list[Any] = []
    if not book.is_done(Task("prepare"), study.config):
        # the shared data needs one GPU and no torchrun
        ex.update_parameters(slurm_gpus_per_node=min(1, setup.gpus_per_task), slurm_setup=list(setup.setup_lines))
        after = [ex.submit(SlurmTask(str(out), "prepare", plug))]
        ex.update_parameters(slurm_gpus_per_node=setup.gpus_per_task, slurm_setup=params["setup"])
    todo = [t for t in cell_tasks(study.config) if not book.is_done(t, study.config)]
    if after:
        ex.update_parameters(
            slurm_additional_parameters={**params["additional_parameters"], "dependency": f"afterok:{after[0].job_id}"}
        )
    with ex.batch():
        jobs = [ex.submit(SlurmTask(str(out), t.id, plug)) for t in todo]
    ex.update_parameters(
        slurm_gpus_per_node=min(1, setup.gpus_per_task),
        slurm_setup=list(setup.setup_lines),
        slurm_additional_parameters={
            **params["additional_parameters"],
            "dependency": "afterok:" + ":".join(j.job_id for j in jobs or after),
        },
    )
    final = ex.submit(SlurmTask(str(out), "finalise", plug))
    print(
        f"submitted: prepare {[j.job_id for j in after]}, {len(jobs)} cell task(s), finalise {final.job_id}; "
        f"follow them with `probe-lens status --out {out}`"
    )
    return None


EXECUTORS.register("inprocess", run_inprocess)
EXECUTORS.register("local", run_local)
EXECUTORS.register("submitit", run_submitit)


def launch(study, plugins: list[str] | None = None):
    """Run (or submit) ``study`` with its ``launch.executor``; the summary table when it ran here."""
    tracking.check_tracker(study.config)
    return EXECUTORS.get(study.config.launch.executor)(study, list(plugins or []))
