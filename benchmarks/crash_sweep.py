"""Crash-and-resume sweep of the whole study on the tiny model (issue 15, deliverable 2).

A *kill point* is "the N-th call of function F", optionally counted only while functions W... run
and only for calls whose path arguments contain a text (e.g. ``os.replace`` of a ``.step_*`` folder
inside ``save_checkpoint``: a checkpoint's files written, its folder not yet renamed into place).
The study runs in a child process that SIGKILLs itself on that call (no exception, no cleanup: as the
OOM killer or a pulled plug would), then again with ``resume=True`` and no kill point; its outputs
are compared with an uninterrupted reference run: ``results.csv`` (numbers within 1e-9), every
cell's ``metrics.jsonl`` (rows equal within 1e-9, ``*_seconds`` left out), every probe file
(byte-equal), and the other study files (prompt plan, seed split, noise floor, training samples and
scores, probe data, probe scores, geometry, eval.json, evaluation samples).

    .venv/bin/python benchmarks/crash_sweep.py             # the full sweep: every point, one study each
    .venv/bin/python benchmarks/crash_sweep.py --ci        # the CI handful, killed one after another in one study
    .venv/bin/python benchmarks/crash_sweep.py --list      # the points, resolved against a reference run
    .venv/bin/python benchmarks/crash_sweep.py --only DPO  # the points whose name contains "DPO"

The N of a point is resolved against the reference run's call counts (``first`` / ``mid`` / ``last``
/ ``last-<k>`` or an int), so the points stay spread over the study when its sizes change; a point
the study never reaches, or an attempt that is not killed, is an error. Every attempt is a fork of
this process, which imports torch and probe_lens once and computes nothing before forking (1 thread).
A spec reads ``module:qualname[@module:qualname...][~text]#N`` (``~text$``: a path ending in text).
``tests/acceptance/test_crash_resume.py`` runs ``--ci``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SWEEP_CELLS = ["base", "probe_sft_ens", "probe_dpo_1", "classifier_dpo", "probe_filtered_sft"]
"""The sweep's cells: every objective (none, probe-SFT, DPO, filtered SFT) and every training signal
(probe, ensemble, classifier); ``--cells`` takes any (the tiny study has eight)."""
CI_CELLS = ["base", "probe_sft_1", "classifier_dpo", "classifier_sft"]
STEPS = 3
"""Optimizer steps per training cell: a checkpoint after every one (``checkpoint_every=1``), 2 kept."""


# ---------------------------------------------------------------------------------------------
# the study under test
# ---------------------------------------------------------------------------------------------


def study_config(cells: list[str]):
    """The tiny study, cut to seconds per cell, checkpointing every step (so kills land inside writes)."""
    from probe_lens.testing import tiny_study_config

    # out_dir: a placeholder the runner replaces with each cell's folder (a training section cannot set
    # checkpoint_every without one: TrainConfig checks it at construction; StudyConfig.to_dict drops it)
    train = {"max_steps": STEPS, "checkpoint_every": 1, "keep_checkpoints": 2, "out_dir": "<cell folder>"}
    return tiny_study_config(
        cells=cells,
        data={"chunk_prompts": 16},  # 60 pool prompts -> 4 chunks: kills between and inside chunk writes
        probe_sft=train,
        dpo=train,
        classifier_sft=train,
        probes={"noise_floor_resamples": 2},
        eval={"n_curated": 8, "n_telemetry_prompts": 2, "n_provocative": 4},
        telemetry_every=1,
    )


def prepare_parent() -> None:
    """Import everything once in the sweep's parent (each attempt is a fork of it: a fresh process that
    need not import torch again). No torch computation happens before a fork."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # the same kernels in every attempt (and a small share of a shared machine)
    _import_targets()
    import probe_lens.experiments.runner  # noqa: F401
    import probe_lens.testing  # noqa: F401


def run_study(out: Path, cells: list[str], kill: str | None = None, counts_file: Path | None = None) -> None:
    """One attempt at the study in ``out`` (resuming whatever is there): SIGKILLed at ``kill``, or with
    ``counts_file`` the call counts of every kill point's target written there at the end."""
    counters = None
    if kill:
        install([parse_point(kill)], kill=True)
    if counts_file is not None:
        counters = install([parse_point(p.spec(1)) for p in POINTS], kill=False)  # counts only

    from probe_lens.experiments.runner import Study
    from probe_lens.testing import non_ascii_scorer, tiny_model

    Study(
        study_config(cells),
        out,
        resume=True,
        model=tiny_model(n_layers=4),
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    ).run()
    if counters is not None:
        counts_file.write_text(json.dumps(counters, indent=1))


def attempt(out: Path, cells: list[str], kill: str | None = None, counts_file: Path | None = None) -> tuple[str, str]:
    """Run :func:`run_study` in a forked child; returns (``"ok"`` / ``"killed"`` / ``"failed (...)"``, its stderr)."""
    log = out.parent / f"{out.name}.stderr"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            import warnings

            warnings.simplefilter("ignore")
            run_study(out, cells, kill, counts_file)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    err = log.read_text(errors="replace") if log.exists() else ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ("killed" if sig == signal.SIGKILL else f"failed (signal {sig})"), err
    code = os.WEXITSTATUS(status)
    return ("ok" if code == 0 else f"failed (exit {code})"), err


# ---------------------------------------------------------------------------------------------
# kill points
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """A kill point: the ``n``-th call of ``target`` counted while every function in ``within`` runs and
    (``match``) whose positional arguments, as text, contain ``match`` (e.g. the file being written)."""

    name: str
    target: str
    within: tuple[str, ...] = ()
    match: str | None = None
    n: int | str = "first"
    stage: str = ""

    def key(self) -> str:
        return self.target + "".join(f"@{w}" for w in self.within) + (f"~{self.match}" if self.match else "")

    def spec(self, n: int) -> str:
        return f"{self.key()}#{n}"

    def resolve(self, counts: dict[str, int]) -> int | None:
        """The call number to kill at, given the reference run's counts (None: never called)."""
        total = counts.get(self.key(), 0)
        if total == 0:
            return None
        if isinstance(self.n, int):
            return self.n if self.n <= total else None
        if self.n == "first":
            return 1
        if self.n == "last":
            return total
        if self.n.startswith("last-"):
            k = total - int(self.n[len("last-") :])
            return k if k >= 1 else None
        if self.n == "mid":
            return (total + 1) // 2
        raise ValueError(f"unknown call number {self.n!r}")


R, B, CK, OBJ = (
    "probe_lens.experiments.runner",
    "probe_lens.data.builder",
    "probe_lens.training.checkpoint",
    "probe_lens.training.objectives",
)
IO, TEL = "probe_lens._io", "probe_lens.training.telemetry"
RF, ST, EV = (
    "probe_lens.experiments.run_folder",
    "probe_lens.experiments.study_telemetry",
    "probe_lens.experiments.evaluation",
)
SAVE_CKPT = f"{CK}:save_checkpoint"
TRAIN_SFT, TRAIN_DPO, TRAIN_FILTERED = (
    f"{OBJ}.probe_sft:train_probe_sft",
    f"{OBJ}.dpo:train_dpo",
    f"{OBJ}.filtered_sft:train_classifier_sft",
)
SFT_STEP, DPO_STEP = f"{OBJ}.probe_sft:SFTObjective.loss", f"{OBJ}.dpo:DPOObjective.loss"

POINTS: list[Point] = [
    # data building (60 pool prompts in 4 chunks of 16)
    Point("first chunk being built", f"{B}:_build_chunk", stage="data"),
    Point("second chunk built, not saved", f"{B}:_save_chunk", n=2, stage="data"),
    Point(
        "inside a chunk write: tensors written, json not",
        f"{IO}:atomic_write",
        (f"{B}:_save_chunk",),
        ".json",
        n=2,
        stage="data",
    ),
    Point(
        "inside a chunk write: tensors file not renamed",
        "os:replace",
        (f"{B}:_save_chunk",),
        ".safetensors",
        n="last",
        stage="data",
    ),
    Point("all chunks saved, dataset not", f"{B}:ActivationDataset.save", stage="data"),
    Point(
        "dataset written but its meta.json",
        f"{IO}:atomic_write",
        (f"{B}:ActivationDataset.save",),
        "meta.json",
        stage="data",
    ),
    Point("prompt plan being written", f"{RF}:write_json", (), "prompts.json", stage="data"),
    # probes and the seed's files
    Point("probe fitting starts", f"{R}:Study.fit_probes", stage="probes"),
    Point("split.json being written", f"{RF}:write_json", (), "split.json", stage="probes"),
    Point("some probes saved", "probe_lens.probes.io:save_probe", n=3, stage="probes"),
    Point(
        "probes saved, report.csv not", f"{IO}:atomic_write", (f"{R}:Study.fit_probes",), "report.csv", stage="probes"
    ),
    Point("noise floor computed, not written", f"{RF}:write_json", (), "noise_floor.json", stage="probes"),
    Point("training samples generated, not saved", f"{RF}:save_generation", stage="train data"),
    Point("training samples saved, scores not", f"{RF}:write_json", (), "/scores.json", stage="train data"),
    # telemetry
    Point("base cell telemetry", f"{TEL}:DriftTelemetry.measure", stage="telemetry"),
    Point("telemetry re-fits mid-study", f"{TEL}:DriftTelemetry._refit_directions", n="mid", stage="telemetry"),
    Point("telemetry toxicity samples mid-study", f"{ST}:StudyTelemetry.rates", n="mid", stage="telemetry"),
    Point("telemetry at a DPO step", f"{TEL}:DriftTelemetry.measure", (TRAIN_DPO,), n="mid", stage="telemetry"),
    Point("metrics row being appended", "probe_lens.training._io:MetricsWriter.write", n="mid", stage="telemetry"),
    # training, each objective
    Point("probe-SFT first step", SFT_STEP, (TRAIN_SFT,), stage="train probe_sft"),
    Point("probe-SFT first checkpoint write starts", SAVE_CKPT, (TRAIN_SFT,), stage="train probe_sft"),
    Point("probe-SFT last step", SFT_STEP, (TRAIN_SFT,), n="last", stage="train probe_sft"),
    Point("DPO reference log-probs", f"{OBJ}.dpo:DPOObjective._reference_logps", (TRAIN_DPO,), stage="train dpo"),
    Point("DPO second step", DPO_STEP, (TRAIN_DPO,), n=2, stage="train dpo"),
    Point("DPO checkpoint write starts", SAVE_CKPT, (TRAIN_DPO,), n="mid", stage="train dpo"),
    Point("filtered-SFT first step", SFT_STEP, (TRAIN_FILTERED,), stage="train filtered_sft"),
    Point("filtered-SFT second checkpoint", SAVE_CKPT, (TRAIN_FILTERED,), n=2, stage="train filtered_sft"),
    # inside checkpoint writes
    Point(
        "probe-SFT checkpoint: model written, optimizer not",
        "safetensors.torch:save_file",
        (TRAIN_SFT, SAVE_CKPT),
        "optimizer",
        n=2,
        stage="checkpoint",
    ),
    Point(
        "probe-SFT checkpoint: files written, folder not renamed",
        "os:replace",
        (TRAIN_SFT, SAVE_CKPT),
        "/.step_",
        n=2,
        stage="checkpoint",
    ),
    Point(
        "probe-SFT checkpoint: renamed, latest.json not",
        f"{IO}:atomic_write_text",
        (TRAIN_SFT, SAVE_CKPT),
        "latest.json",
        n=2,
        stage="checkpoint",
    ),
    Point("probe-SFT checkpoint: pruning the oldest", "shutil:rmtree", (TRAIN_SFT, f"{CK}:_prune"), stage="checkpoint"),
    Point(
        "DPO checkpoint: extra (reference log-probs) not written",
        "safetensors.torch:save_file",
        (TRAIN_DPO, SAVE_CKPT),
        "extra",
        n="mid",
        stage="checkpoint",
    ),
    Point(
        "DPO final checkpoint: files written, folder not renamed",
        "os:replace",
        (TRAIN_DPO, SAVE_CKPT),
        "/.step_",
        n="last",
        stage="checkpoint",
    ),
    Point(
        "filtered-SFT final checkpoint: renamed, latest.json not",
        f"{IO}:atomic_write_text",
        (TRAIN_FILTERED, SAVE_CKPT),
        "latest.json",
        n="last",
        stage="checkpoint",
    ),
    # evaluation
    Point("first evaluation starts", f"{EV}:CellEvaluation.evaluate", stage="evaluate"),
    Point("evaluation perplexity mid-study", "probe_lens.experiments.metrics:perplexity", n="mid", stage="evaluate"),
    Point("probe_scores.json being written", f"{RF}:write_json", (), "probe_scores.json", n="mid", stage="evaluate"),
    Point("geometry written, eval.json not", f"{RF}:write_json", (), "eval.json", n="mid", stage="evaluate"),
    Point(
        "eval.json written, checkpoints being deleted",
        "shutil:rmtree",
        (f"{R}:Study.run_cell",),
        "checkpoints$",
        n="mid",
        stage="evaluate",
    ),
    Point("last evaluation", f"{EV}:CellEvaluation.evaluate", n="last", stage="evaluate"),
    # report
    Point("report starts", f"{R}:Study.report", stage="report"),
    Point(
        "results.csv written, the rest not",
        f"{IO}:atomic_write",
        (f"{R}:Study.report",),
        "results.parquet",
        stage="report",
    ),
    Point("timings.json being written", f"{RF}:write_json", (), "timings.json", stage="report"),
    Point("drift report being written", "probe_lens.experiments.report:write_report", stage="report"),
    Point(
        "inside the drift report: report.html not renamed",
        "os:replace",
        ("probe_lens.experiments.report:write_report",),
        "report.html",
        stage="report",
    ),
]

CI_CHAIN: list[tuple[str, int | str | None]] = [
    # (point, call number in its attempt if not the point's own): killed one after another in one study,
    # each attempt resuming the previous one's leftovers, so one study's time covers them all
    ("inside a chunk write: tensors written, json not", None),
    ("probes saved, report.csv not", None),
    ("probe-SFT checkpoint: files written, folder not renamed", None),
    ("DPO checkpoint write starts", None),
    ("filtered-SFT final checkpoint: renamed, latest.json not", None),
    ("geometry written, eval.json not", "first"),  # the cells before it finished in earlier attempts
    ("results.csv written, the rest not", None),
]


def parse_point(spec: str) -> tuple[str, tuple[str, ...], str | None, int]:
    """``module:qualname[@module:qualname...][~text]#N`` -> (target, within, match, N)."""
    head, sep, n = spec.rpartition("#")
    if not sep or not n.isdigit() or int(n) < 1:
        raise ValueError(f"kill point {spec!r}: expected module:function[@module:function...][~text]#N with N >= 1")
    head, _, match = head.partition("~")
    target, *within = head.split("@")
    return target, tuple(within), match or None, int(n)


def _import_targets() -> None:
    """Import every module a kill point names, so their ``from x import f`` bindings exist to patch."""
    for p in POINTS:
        for ref in (p.target, *p.within):
            importlib.import_module(ref.partition(":")[0])
    for mod in (
        "probe_lens.experiments.headline",
        "probe_lens.experiments.stats",
        "probe_lens.experiments.metrics",
        "probe_lens.data.curated",
    ):
        importlib.import_module(mod)


def _resolve(ref: str) -> tuple[Any, str, Any]:
    """``module:Qual.name`` -> (owner object, attribute, current value)."""
    mod, _, qual = ref.partition(":")
    owner: Any = importlib.import_module(mod)
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    if isinstance(owner, type) and attr not in vars(owner):
        raise AttributeError(f"{ref}: {attr} is not defined on {owner.__name__} itself (name the defining class)")
    return owner, attr, getattr(owner, attr)


def _patch(ref: str, make) -> None:
    """Replace ``ref`` by ``make(original)`` on its owner and in every probe_lens module bound to it."""
    owner, attr, orig = _resolve(ref)
    new = make(orig)
    setattr(owner, attr, new)
    if isinstance(owner, type):
        return
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "probe_lens" or name.startswith("probe_lens.")):
            continue
        for k, v in list(vars(mod).items()):
            if v is orig:
                setattr(mod, k, new)


def install(points: list[tuple[str, tuple[str, ...], str | None, int]], *, kill: bool) -> dict[str, int]:
    """Wrap each point's target: count its calls (while its ``within`` functions run, with ``match`` in
    its arguments) and, with ``kill``, SIGKILL this process on the N-th."""
    counts: dict[str, int] = {}
    depth: dict[str, int] = {}
    for within in sorted({w for _, ws, _, _ in points for w in ws}):
        depth[within] = 0

        def track(orig, within=within):
            @functools.wraps(orig)
            def inner(*a, **k):
                depth[within] += 1
                try:
                    return orig(*a, **k)
                finally:
                    depth[within] -= 1

            return inner

        _patch(within, track)
    by_target: dict[str, dict[str, tuple[tuple[str, ...], str | None, int]]] = {}
    for target, within, match, n in points:
        key = target + "".join(f"@{w}" for w in within) + (f"~{match}" if match else "")
        by_target.setdefault(target, {})[key] = (within, match, n)
        counts[key] = 0
    for target, conds in by_target.items():

        def wrap(orig, conds=conds):
            @functools.wraps(orig)
            def inner(*a, **k):
                text = None
                for key, (within, match, n) in conds.items():
                    if any(depth[w] == 0 for w in within):
                        continue
                    if match is not None:
                        text = (
                            " ".join(str(x) for x in a if isinstance(x, (str, os.PathLike))) if text is None else text
                        )
                        if not (text.endswith(match[:-1]) if match.endswith("$") else match in text):
                            continue
                    counts[key] += 1
                    if kill and counts[key] == n:
                        os.kill(os.getpid(), signal.SIGKILL)
                return orig(*a, **k)

            return inner

        _patch(target, wrap)
    return counts


# ---------------------------------------------------------------------------------------------
# comparing two run folders
# ---------------------------------------------------------------------------------------------


def _is_timing(key: str) -> bool:
    """Wall-clock figures (``train/step_seconds``, ...): different in every run, left out of comparisons."""
    return key.endswith("_seconds")


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a if not _is_timing(str(k)))
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _strip_timing(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip_timing(v) for k, v in d.items() if not _is_timing(str(k))}
    return d


def compare_runs(ref: Path, got: Path, tol: float = 1e-9) -> list[str]:
    """Differences between two finished study folders (empty: the same results)."""
    import pandas as pd

    problems: list[str] = []
    for f in ("results.csv", "summary.csv", "report.html", "headline.md"):
        if not (got / f).exists():
            problems.append(f"{f} is missing")
    if (got / "results.csv").exists():
        a, b = pd.read_csv(ref / "results.csv"), pd.read_csv(got / "results.csv")
        cols = [c for c in a.columns if not _is_timing(c)]
        if sorted(cols) != sorted(c for c in b.columns if not _is_timing(c)):
            problems.append(f"results.csv columns differ: {sorted(set(a.columns) ^ set(b.columns))}")
        elif len(a) != len(b):
            problems.append(f"results.csv has {len(b)} rows, the reference {len(a)}")
        else:
            for c in cols:
                if pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c]):
                    bad = [i for i, (x, y) in enumerate(zip(a[c], b[c])) if not _close(float(x), float(y), tol)]
                else:
                    bad = [i for i, (x, y) in enumerate(zip(a[c].astype(str), b[c].astype(str))) if x != y]
                if bad:
                    i = bad[0]
                    problems.append(f"results.csv[{a['cell'][i]}, {c}]: {b[c][i]!r} vs reference {a[c][i]!r}")
    # every cell's training metrics, row by row
    ref_m = {p.relative_to(ref) for p in ref.glob("cells/*/seed*/train/metrics.jsonl")}
    got_m = {p.relative_to(got) for p in got.glob("cells/*/seed*/train/metrics.jsonl")}
    if ref_m != got_m:
        problems.append(f"metrics.jsonl files differ: {sorted(map(str, ref_m ^ got_m))}")
    for rel in sorted(ref_m & got_m):
        ra = [json.loads(l) for l in (ref / rel).read_text().splitlines() if l.strip()]
        rb = [json.loads(l) for l in (got / rel).read_text().splitlines() if l.strip()]
        if len(ra) != len(rb):
            problems.append(f"{rel}: {len(rb)} rows, the reference {len(ra)}")
            continue
        for i, (x, y) in enumerate(zip(ra, rb)):
            x, y = _strip_timing(x), _strip_timing(y)
            if not _close(x, y, tol):
                keys = sorted(k for k in set(x) | set(y) if not _close(x.get(k), y.get(k), tol))
                problems.append(f"{rel} row {i} (step {x.get('step')}): differs in {keys[:5]}")
                break

    # probe files and the other study files
    def files(root: Path) -> set[Path]:
        pats = (
            "probes/**/*",
            "seeds/*/*.json",
            "seeds/*/train_data/*",
            "cells/*/seed*/*.json",
            "cells/*/seed*/eval_samples.parquet",
            "data/probe_pool/*.safetensors",
            "data/probe_pool/*.parquet",
            "prompts.json",
            "study.json",
        )
        return {
            p.relative_to(root) for pat in pats for p in root.glob(pat) if p.is_file() and not p.name.startswith(".")
        }

    fa, fb = files(ref), files(got)
    if fa != fb:
        problems.append(
            f"files differ: only in reference {sorted(map(str, fa - fb))[:5]}, only here {sorted(map(str, fb - fa))[:5]}"
        )
    for rel in sorted(fa & fb):
        x, y = (ref / rel).read_bytes(), (got / rel).read_bytes()
        if x == y:
            continue
        if rel.suffix == ".json":
            jx, jy = _strip_timing(json.loads(x)), _strip_timing(json.loads(y))
            if isinstance(jx, dict) and "info" in jx:  # eval.json: how the cell was reached is not a result
                for j in (jx, jy):
                    j["info"] = {k: v for k, v in (j.get("info") or {}).items() if k != "evaluated_from"}
            if _close(jx, jy, tol):
                continue
        elif rel.suffix == ".parquet":
            import pandas as pd

            da, db = pd.read_parquet(ref / rel), pd.read_parquet(got / rel)
            if da.equals(db):
                continue
        problems.append(f"{rel} differs from the reference")
    return problems


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------


def reference_run(out: Path, cells: list[str]) -> tuple[dict[str, int], float]:
    """An uninterrupted run into ``out``; returns the call counts of every kill-point target and its seconds."""
    counts_file = out.parent / f"{out.name}.counts.json"
    t0 = time.perf_counter()
    status, err = attempt(out, cells, counts_file=counts_file)
    if status != "ok":
        raise RuntimeError(f"the reference run {status}:\n{err[-4000:]}")
    return json.loads(counts_file.read_text()), time.perf_counter() - t0


@dataclasses.dataclass
class Outcome:
    points: list[tuple[Point, int | None]]
    killed: list[bool]
    resumed: bool
    identical: bool
    seconds: float
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": [{"name": p.name, "stage": p.stage, "spec": p.spec(n) if n else p.key()} for p, n in self.points],
            "killed": self.killed,
            "resumed": self.resumed,
            "identical": self.identical,
            "seconds": round(self.seconds, 1),
            "problems": self.problems,
        }

    def rows(self) -> list[str]:
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        return [
            f"| {p.stage} | {p.name} | `{p.spec(n) if n else p.key()}` | {yn(k)} | {yn(self.resumed)} | "
            f"{yn(self.identical)} | {self.seconds:.0f} |"
            for (p, n), k in zip(self.points, self.killed)
        ]


def run_points(points: list[tuple[Point, int | None]], ref: Path, out: Path, cells: list[str]) -> Outcome:
    """Kill a fresh study at each of ``points`` in turn (each kill in the attempt resuming the previous
    one), then resume it to the end and compare it with ``ref``."""
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    problems: list[str] = []
    killed: list[bool] = []
    for p, n in points:
        if n is None:
            problems.append(f"{p.key()} is never called in the reference run")
            killed.append(False)
            continue
        status, err = attempt(out, cells, kill=p.spec(n))
        killed.append(status == "killed")
        if status != "killed":
            problems.append(
                f"{p.name}: not killed ({status})"
                + (f":\n{err[-3000:]}" if status != "ok" else " (the point was not reached)")
            )
    status, err = attempt(out, cells)
    resumed = status == "ok"
    if not resumed:
        problems.append(f"the resumed run {status}:\n{err[-3000:]}")
    else:
        problems += compare_runs(ref, out)
    if not problems:
        shutil.rmtree(out, ignore_errors=True)
    return Outcome(points, killed, resumed, resumed and not problems, time.perf_counter() - t0, problems)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:60]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cells",
        default=None,
        help=f"comma-separated cells (default: {','.join(SWEEP_CELLS)}; --ci: {','.join(CI_CELLS)})",
    )
    ap.add_argument(
        "--ci",
        action="store_true",
        help="the CI handful: four cells, the CI points killed one after another in one study",
    )
    ap.add_argument("--only", default=None, help="comma-separated substrings of the point names to run")
    ap.add_argument("--list", action="store_true", help="print the points resolved against a reference run, and stop")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (and the reference run)")
    ap.add_argument("--json", default=None, help="write the outcomes here")
    args = ap.parse_args(argv)
    cells = args.cells.split(",") if args.cells else (CI_CELLS if args.ci else SWEEP_CELLS)
    by_name = {p.name: p for p in POINTS}
    points = (
        [dataclasses.replace(by_name[name], n=n) if n else by_name[name] for name, n in CI_CHAIN]
        if args.ci
        else list(POINTS)
    )
    if args.only:
        points = [p for p in points if any(s in p.name for s in args.only.split(","))]
    work = Path(args.work or tempfile.mkdtemp(prefix="crash_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    prepare_parent()
    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    counts, t_ref = reference_run(ref, cells)
    print(f"reference run: {t_ref:.0f} s, cells {cells}", flush=True)
    resolved = [(p, p.resolve(counts)) for p in points]
    if args.list:
        for p, n in resolved:
            print(
                f"{p.stage:20s} {p.name:58s} {p.spec(n) if n else p.key() + ' (never called)'} of {counts.get(p.key(), 0)}"
            )
        return 0
    print(
        "| stage | kill point | spec | killed | resumed | identical | s |\n|---|---|---|---|---|---|---:|", flush=True
    )
    outcomes = []
    groups = [resolved] if args.ci else [[pn] for pn in resolved]
    for group in groups:
        o = run_points(group, ref, work / ("chain" if args.ci else _slug(group[0][0].name)), cells)
        outcomes.append(o)
        print("\n".join(o.rows()), flush=True)
        for line in o.problems:
            print("    " + line.replace("\n", "\n    "), flush=True)
    total = time.perf_counter() - t_all
    n_points = sum(len(o.points) for o in outcomes)
    n_killed = sum(sum(o.killed) for o in outcomes)
    n_resumed = sum(len(o.points) for o in outcomes if o.resumed)
    n_same = sum(len(o.points) for o in outcomes if o.identical)
    print(
        f"\n{n_points} kill points ({'one after another in one study' if args.ci else 'one study each'}): "
        f"{n_killed} killed, {n_resumed} resumed, {n_same} identical to the uninterrupted run; "
        f"total {total:.0f} s (reference run {t_ref:.0f} s)",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "cells": cells,
                    "reference_seconds": round(t_ref, 1),
                    "total_seconds": round(total, 1),
                    "n_points": n_points,
                    "n_killed": n_killed,
                    "n_resumed": n_resumed,
                    "n_identical": n_same,
                    "outcomes": [o.as_dict() for o in outcomes],
                },
                indent=1,
            )
        )
    ok = n_same == n_points == n_killed
    if not args.keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"runs kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
