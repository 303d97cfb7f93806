"""The study as a task graph (issue 29): the local executor in worker processes gives the serial run's
results; a task SIGKILLed mid-training and rerun alone resumes from its checkpoint to the same numbers;
``finalise`` refuses while a task is missing; the sbatch scripts submitit writes (a stand-in ``sbatch``
keeps them, no Slurm needed); an offline W&B run holds the telemetry rows.

One tiny study (base + probe-SFT, three steps, a checkpoint after each) is run twice: in this process
(the reference, 1 torch thread) and with ``--executor local --workers 2`` (1 thread per worker).
The output classifier is the non-ASCII test scorer, registered by a plugin file that every worker imports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from probe_lens.cli import main

ROOT = Path(__file__).resolve().parents[2]
CELL = "cell/probe_sft_1/seed0"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@contextlib.contextmanager
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' kernels (1 thread each): the same numbers
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(plugin file, study file, serial run folder, local run folder, the local coordinator's pid)."""
    from probe_lens.testing import write_launch_study

    root = tmp_path_factory.mktemp("launch")
    plugin, study = write_launch_study(root)
    serial, local = root / "serial", root / "local"
    with _one_thread():
        rc, out = _cli(
            "reproduce", "--config", str(study), "--out", str(serial), "--no-progress", "--plugin", str(plugin)
        )
    assert rc == 0, out
    cmd = [sys.executable, "-m", "probe_lens.cli", "reproduce", "--config", str(study), "--out", str(local)]
    cmd += ["--no-progress", "--plugin", str(plugin), "--executor", "local", "--workers", "2"]
    cmd += ["--set", "launch.threads_per_worker=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text[-4000:]
    return plugin, study, serial, local, proc.pid


def _records(run: Path) -> dict[str, dict]:
    return {(r := json.loads(f.read_text()))["task"]: r for f in sorted((run / "launch" / "tasks").glob("*.json"))}


def test_local_executor_equals_the_serial_run_in_separate_processes(runs):
    _, _, serial, local, coordinator = runs
    # every number equal; the columns' order is presentation (it once differed between the two runs)
    pd.testing.assert_frame_equal(
        pd.read_csv(local / "results.csv"), pd.read_csv(serial / "results.csv"), check_exact=True, check_like=True
    )
    recs = _records(local)
    assert set(recs) == {"prepare", "cell/base/seed0", CELL, "finalise"}
    assert all(r["state"] == "done" for r in recs.values())
    cell_pids = {recs["cell/base/seed0"]["pid"], recs[CELL]["pid"]}
    assert len(cell_pids) == 2, "each task runs in its own worker process"
    assert not cell_pids & {coordinator, os.getpid(), recs["prepare"]["pid"]}
    assert recs["finalise"]["pid"] == coordinator  # the final step runs in the coordinator
    assert {recs["cell/base/seed0"]["threads"], recs[CELL]["threads"]} == {1}


def test_status_lists_every_task(runs, capsys):
    *_, local, _ = runs
    assert main(["status", "--out", str(local)]) == 0
    out = capsys.readouterr().out
    assert "4 done, 0 running, 0 failed, 0 pending" in out and CELL in out


def test_status_of_a_study_run_in_one_process(runs, capsys):
    """No task records (the in-process run keeps none): the run folder's files say what is done."""
    _, _, serial, *_ = runs
    assert main(["status", "--out", str(serial)]) == 0
    assert "4 done, 0 running, 0 failed, 0 pending" in capsys.readouterr().out


def _metrics(run: Path, cell: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "cells" / cell / "seed0/train/metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


def test_killed_task_reruns_alone_from_its_checkpoint(runs, tmp_path, capsys):
    plugin, _, serial, local, _ = runs
    run = tmp_path / "killed"
    shutil.copytree(local, run)
    shutil.rmtree(run / "cells" / "probe_sft_1")
    for f in ("results.csv", "launch/tasks/finalise.json"):
        (run / f).unlink()

    # the final step refuses while a task is missing, naming it
    assert main(["task", "--out", str(run), "finalise", "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert "no headline is written" in err and CELL in err and "Traceback" not in err
    assert not (run / "results.csv").exists()

    # the task, SIGKILLed at its second checkpoint (the first one written)
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('crash_sweep', {str(ROOT / 'benchmarks/crash_sweep.py')!r})\n"
        "cs = importlib.util.module_from_spec(spec); sys.modules['crash_sweep'] = cs; spec.loader.exec_module(cs)\n"
        "cs.install([cs.parse_point('probe_lens.training.checkpoint:save_checkpoint#2')], kill=True)\n"
        "from probe_lens.launch.worker import main\n"
        f"main(['--out', {str(run)!r}, '--task', {CELL!r}, '--plugin', {str(plugin)!r}, '--threads', '1'])\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == -9, r.stderr[-3000:]
    ckpts = run / "cells/probe_sft_1/seed0/train/checkpoints"
    assert [p.name for p in ckpts.iterdir() if p.name.startswith("step")] == ["step_000001"]

    assert main(["status", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2 failed" in out  # the task, and the refused finalise
    assert f"{CELL}  failed" in out and "killed?" in out and f"rerun: probe-lens task --out {run} {CELL}" in out

    with _one_thread():
        assert main(["task", "--out", str(run), CELL, "--plugin", str(plugin)]) == 0
        assert main(["task", "--out", str(run), "finalise"]) == 0
    rec = _records(run)[CELL]
    assert rec["state"] == "done" and rec["attempts"] == 3  # the local run, the killed one, the rerun
    got, want = _metrics(run, "probe_sft_1"), _metrics(serial, "probe_sft_1")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(g[k] == pytest.approx(w[k], abs=1e-9) for k in w)
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "results.csv"), pd.read_csv(serial / "results.csv"), atol=1e-9, check_like=True
    )


# ------------------------------------------------------------------ Slurm through submitit

FAKE_SBATCH = """#!/bin/sh
# a stand-in for Slurm's sbatch: keeps the script it is given and answers as sbatch does
n=$(ls "$FAKE_SLURM_DIR" | wc -l)
cp "$1" "$FAKE_SLURM_DIR/script_$n.sh"
echo "Submitted batch job $((100 + n))"
"""


def test_submitit_scripts_hold_partition_gpus_time_and_torchrun(runs, tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit", reason="pip install 'probe-lens[cluster]'")
    import dataclasses

    from probe_lens.experiments import Study
    from probe_lens.experiments.config import StudyConfig
    from probe_lens.launch import launch

    plugin, _, serial, *_ = runs
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(scripts))
    cfg = StudyConfig.load(serial / "study.json")
    cfg.launch = dataclasses.replace(
        cfg.launch,
        executor="submitit",
        partition="gpu-long",
        gpus_per_task=2,
        time_min=90,
        sbatch_lines=["--account=lab"],
    )
    assert launch(Study(cfg, tmp_path / "run", progress=False), [str(plugin)]) is None
    prepare, cells, finalise = (scripts / f"script_{i}.sh" for i in range(3))
    array = cells.read_text()
    for line in ("--partition=gpu-long", "--gpus-per-node=2", "--time=90", "--account=lab", "--array=0-1%2"):
        assert f"#SBATCH {line}\n" in array, line
    assert "#SBATCH --dependency=afterok:100\n" in array  # after prepare
    assert "export PROBE_LENS_TORCHRUN='torchrun --standalone --nproc_per_node=2'" in array
    assert "#SBATCH --signal=USR2@120" in array  # submitit requeues on preemption / time-out
    assert "--gpus-per-node=1" in prepare.read_text() and "torchrun" not in prepare.read_text()
    assert "#SBATCH --dependency=afterok:101_0:101_1\n" in finalise.read_text()
    assert "probe-lens status --out" in capsys.readouterr().out


def test_slurm_task_runs_under_torchrun_and_requeues_itself(monkeypatch):
    pytest.importorskip("submitit", reason="pip install 'probe-lens[cluster]'")
    import submitit

    from probe_lens.launch.executors import SlurmTask

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setenv("PROBE_LENS_TORCHRUN", "torchrun --standalone --nproc_per_node=2")
    task = SlurmTask("/runs/x", CELL, ["my_plugin"])
    task()
    assert calls == [
        ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "probe_lens.launch.worker"]
        + ["--out", "/runs/x", "--task", CELL, "--plugin", "my_plugin"]
    ]
    again = task.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert (again.function.out, again.function.task_id) == ("/runs/x", CELL)


def test_submitit_missing_is_a_clear_error(runs, tmp_path, monkeypatch, capsys):
    _, study, *_ = runs
    monkeypatch.setitem(sys.modules, "submitit", None)  # as when it is not installed
    argv = ["reproduce", "--config", str(study), "--out", str(tmp_path / "r"), "--executor", "submitit"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'probe-lens[cluster]'" in err and "Traceback" not in err


# ------------------------------------------------------------------ tracking


def _wandb_records(run_file: Path) -> tuple[list[dict], dict]:
    """The history rows and the summary of a ``.wandb`` file: LevelDB-log records (32 KiB blocks, 7-byte headers) of W&B's
    protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payloads, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            buf = (buf if kind == 3 else b"") + chunk
        elif kind == 4:
            payloads.append(buf + chunk)
    rows, summary = [], {}
    for raw in payloads:
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    return rows, summary


def test_wandb_offline_run_holds_the_telemetry_rows(runs, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 'probe-lens[wandb]'")
    import dataclasses

    from probe_lens.experiments.config import StudyConfig
    from probe_lens.launch import tracking

    *_, serial, _, _ = runs
    run = tmp_path / "run"
    shutil.copytree(serial, run)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # no key: offline
    cfg = StudyConfig.load(run / "study.json")
    cfg.launch = dataclasses.replace(cfg.launch, log="wandb")
    tracking.log_cell(cfg, run, "probe_sft_1", 0)
    (run_file,) = (run / "launch/tracker/wandb").glob("offline-run-*/run-*.wandb")
    rows, summary = _wandb_records(run_file)
    history = {int(r["_step"]): r for r in rows}
    telemetry = [r for r in _metrics(serial, "probe_sft_1") if any(k.startswith("probe/") for k in r)]
    assert len(telemetry) == 4 and sorted(history) == [0, 1, 2, 3]
    for row in telemetry:
        got = history[row["step"]]
        for k, v in row.items():
            if k != "step" and isinstance(v, float):
                assert got[k] == pytest.approx(v, rel=1e-12), k
    final = json.loads((run / "cells/probe_sft_1/seed0/eval.json").read_text())
    assert summary["eval/toxicity_rate"] == pytest.approx(final["eval/toxicity_rate"], rel=1e-12)


def test_wandb_headline_run_holds_the_contrasts_and_the_report_figures(runs, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 'probe-lens[wandb]'")
    import dataclasses

    from probe_lens.launch import tracking
    from probe_lens.launch.worker import open_study

    *_, serial, _, _ = runs
    run = tmp_path / "run"
    shutil.copytree(serial, run)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    study = open_study(run)
    study.report()
    figures = study.report_figures
    assert {"cosine_drift", "auroc_vs_step", "results_table"} <= set(figures)
    cfg = dataclasses.replace(study.config, launch=dataclasses.replace(study.config.launch, log="wandb"))
    tracking.log_headline(cfg, run, figures)
    (run_file,) = (run / "launch/tracker/wandb").glob("offline-run-*/run-*.wandb")
    rows, summary = _wandb_records(run_file)
    flat = {k: v for r in rows for k, v in r.items() if k.startswith("report/")}  # nested keys: report/<name>/path
    charts = {k.removesuffix("/path"): v for k, v in flat.items() if k.endswith("/path")}
    assert set(charts) == {f"report/{k}" for k in figures}
    for name, fig in figures.items():  # each chart's file holds the figure's own traces
        (path,) = run_file.parent.glob(f"files/{charts[f'report/{name}']}")
        assert len(json.loads(path.read_text())["data"]) == len(fig.data), name
    contrasts = pd.read_csv(run / "contrasts.csv")
    r = contrasts.iloc[0]
    key = f"contrast/{r['a']}/{r['b']}/{r['metric']}/mean_diff"
    assert summary[key] == pytest.approx(float(r["mean_diff"]), rel=1e-12)


def test_a_missing_tracker_is_a_clear_error(runs, tmp_path, monkeypatch, capsys):
    _, study, *_ = runs
    monkeypatch.setitem(sys.modules, "trackio", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "trackio" else real(n, *a))
    assert main(["reproduce", "--config", str(study), "--out", str(tmp_path / "r"), "--log", "trackio"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'probe-lens[trackio]'" in err and "Traceback" not in err


def test_task_names_and_launch_settings_are_checked(runs, capsys):
    from probe_lens.experiments.config import LaunchSetup, StudyConfig
    from probe_lens.launch import Task

    *_, serial, _, _ = runs
    cfg = StudyConfig.load(serial / "study.json")
    assert Task.parse(CELL, cfg) == Task("cell", "probe_sft_1", 0)
    for bad in ("cell/dpo_1/seed0", "cell/base/seed7", "train", "cell/base"):
        with pytest.raises(ValueError, match="no task"):
            Task.parse(bad, cfg)
    with pytest.raises(ValueError, match="launch.executor"):
        LaunchSetup(executor="ray")
    with pytest.raises(ValueError, match="launch.workers"):
        LaunchSetup(workers=0)
    with pytest.raises(ValueError, match="sbatch options"):
        LaunchSetup(sbatch_lines=["#SBATCH --account=x"])
    assert main(["task", "--out", str(serial), "cell/nope/seed0"]) == 2
    assert "no task 'cell/nope/seed0'" in capsys.readouterr().err


def test_sbatch_preview_of_one_task(tmp_path):
    pytest.importorskip("submitit", reason="pip install 'probe-lens[cluster]'")
    from probe_lens.experiments.config import LaunchSetup
    from probe_lens.launch import sbatch_script

    one = sbatch_script(LaunchSetup(partition="short", gpus_per_task=1, time_min=30), tmp_path)
    two = sbatch_script(LaunchSetup(partition="short", gpus_per_task=2, time_min=30, mem_gb=80), tmp_path)
    for line in ("--partition=short", "--time=30", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in one and f"#SBATCH {line}\n" in two
    assert "#SBATCH --gpus-per-node=1\n" in one and "torchrun" not in one
    assert "#SBATCH --gpus-per-node=2\n" in two and "#SBATCH --mem=80GB\n" in two
    assert "export PROBE_LENS_TORCHRUN='torchrun --standalone --nproc_per_node=2'" in two


def test_a_task_running_elsewhere_is_not_run_twice(runs, tmp_path, capsys):
    import socket

    from probe_lens.launch import Task, TaskBook

    *_, local, _ = runs
    run = tmp_path / "run"
    shutil.copytree(local, run)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        TaskBook(run).write(
            Task("cell", "base", 0), "running", pid=other.pid, host=socket.gethostname(), slurm_job=None
        )
        assert main(["task", "--out", str(run), "cell/base/seed0"]) == 2
        assert f"running already (pid {other.pid}" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
    assert main(["task", "--out", str(run), "cell/base/seed0"]) == 0  # its process gone: rerun (read back)
