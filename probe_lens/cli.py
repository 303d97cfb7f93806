"""``probe-lens``: the study from the command line.

    probe-lens demo                                  # a small slice of the study (< 10 min on 2 CPU cores)
    probe-lens reproduce --preset quick|paper [--model NAME] [--seeds N] [--out DIR] [--resume]
    probe-lens reproduce --behaviour sentiment --preset demo     # another behaviour (default: toxicity)
    probe-lens reproduce --behaviour-file my_behaviour.yaml      # your own (see probe_lens.behaviours.spec)
    probe-lens build-data | fit-probes | train [--cell C --seed S]   (the steps on their own, on --out)
    probe-lens evaluate | report --out DIR           # read the study saved in DIR (its study.json)
    probe-lens config --preset quick > study.yaml    # a study file to edit and pass back with --config
    probe-lens reproduce --plugin my_objective --config study.yaml   # your registrations imported first

Each subcommand offers only the flags it uses (``probe-lens <cmd> --help``); another's is refused by argparse.
A mistake a user can fix (bad flag or study file, unavailable model, a folder holding another study,
...) prints one ``probe-lens <cmd>: error: ...`` paragraph and exits with 2; Ctrl-C exits with 130
(every step is resumable: rerun it, ``reproduce`` with --resume); anything else is an internal error (exit 1).
``--debug`` or ``PROBE_LENS_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

# the steps that run on an existing run folder: with --out and no --preset/--config they use its study.json
_STEP_COMMANDS = ("build-data", "fit-probes", "train", "evaluate", "report")


MAX_SEEDS = 10_000
"""More seeds than any study could run: a larger ``--seeds`` is a typo."""


class UsageError(Exception):
    """A mistake in the command line or a study file: one error paragraph, exit code 2."""


def _preset_names() -> list[str]:
    from probe_lens.experiments.presets import PRESETS

    return list(PRESETS)


# the study flags: (flag, dest, default, argparse keywords); each subcommand offers the ones its code uses
# (_COMMAND_FLAGS) and gets the others' defaults, so every attribute _config/_study read exists on ``args``
_STUDY_FLAGS: tuple[tuple[str, str, object, dict], ...] = (
    ("--preset", "preset", None, {}),
    ("--config", "config_file", None, {
        "metavar": "FILE",
        "help": "a YAML/JSON study file (keys as in `probe-lens config`)",
    }),
    ("--model", "model", None, {"help": "TransformerLens name or local HF folder; 'embedded' = Gemma-3-270M"}),
    ("--behaviour", "behaviour", None, {
        "metavar": "NAME",
        "help": "what the study detects and trains against: toxicity (default) | sentiment | a registered name",
    }),
    ("--behaviour-file", "behaviour_file", None, {
        "metavar": "PATH",
        "help": "a JSON/YAML behaviour spec (your prompts + a scorer name, or pre-labelled rows); "
        "see probe_lens.behaviours.spec",
    }),
    ("--seeds", "seeds", None, {"type": int, "metavar": "N", "help": "number of seeds (0..N-1)"}),
    ("--set", "overrides", [], {
        "action": "append",
        "metavar": "KEY=VALUE",
        "help": "override one field, e.g. --set probe_sft.max_steps=20 (repeatable)",
    }),
    ("--fresh-data", "fresh_data", False, {
        "action": "store_true",
        "help": "sample the probe pool anew instead of reading the shipped reference continuations "
        "(same as --set data_source=fresh)",
    }),
    ("--out", "out", None, {"metavar": "DIR", "help": "run folder (default: runs/<preset>)"}),
    ("--resume", "resume", False, {
        "action": "store_true",
        "help": "continue the study in --out (its study.json unless --preset/--config is given); finished cells "
        "are kept, more --seeds or cells extend it",
    }),
    ("--overwrite", "overwrite", False, {
        "action": "store_true",
        "help": "delete --out first if it holds a different study",
    }),
    ("--plugin", "plugins", [], {
        "action": "append",
        "metavar": "MODULE",
        "help": "import your module (or .py file) first: its objective / behaviour / scorer registrations (repeatable)",
    }),
    ("--device", "device", None, {"help": "cpu | cuda | cuda:N | mps (default: cuda when available)"}),
    ("--backend", "backend", None, {"choices": ("hooked", "bridge"), "help": "model backend (default: the study's)"}),
    ("--no-progress", "no_progress", False, {
        "action": "store_true",
        "help": "hide progress bars; print log lines instead",
    }),
    ("--debug", "debug", False, {
        "action": "store_true",
        "help": "show the full traceback of an error (also PROBE_LENS_DEBUG=1)",
    }),
)  # fmt: skip

_DEFINE = ("--preset", "--config", "--model", "--behaviour", "--behaviour-file", "--seeds", "--set", "--fresh-data")
"""The flags that say which study: they matter wherever a study can be started or grown."""
_RUNTIME = ("--plugin", "--device", "--backend", "--no-progress", "--debug")

_COMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    # demo, build-data, fit-probes and train always continue the study in --out (finished work is kept), so
    # --resume would change nothing; evaluate and report read the study saved in --out and change none of it;
    # config only prints a study file
    "demo": (*_DEFINE, "--out", "--overwrite", *_RUNTIME),
    "reproduce": (*_DEFINE, "--out", "--resume", "--overwrite", *_RUNTIME),
    "build-data": (*_DEFINE, "--out", "--overwrite", *_RUNTIME),
    "fit-probes": (*_DEFINE, "--out", "--overwrite", *_RUNTIME),
    "train": (*_DEFINE, "--out", "--overwrite", *_RUNTIME),
    "evaluate": ("--out", "--plugin", "--device", "--no-progress", "--debug"),
    "report": ("--out", "--set", "--plugin", "--device", "--no-progress", "--debug"),
    "config": (*_DEFINE, "--plugin", "--backend", "--debug"),
}

REPORT_SET_KEYS = ("primary_contrasts",)
"""The study keys ``report --set`` may change: how the finished study is read, not what it computed."""


def _command_help(command: str, default_preset: str) -> dict[str, str]:
    """Help texts that say what a study flag does for ``command`` (over the generic ones of _STUDY_FLAGS)."""
    presets = " | ".join(_preset_names())
    if command == "config":
        return {
            "--preset": f"the preset to print: {presets} (default: {default_preset}, or the --config file alone)",
            "--config": "a YAML/JSON study file to check and print complete (keys as printed here)",
            "--seeds": "number of seeds (0..N-1) written to the study file",
            "--backend": "model backend written to the study file (default: hooked)",
            "--plugin": "import your module (or .py file) first, so the study file may name its objectives / "
            "behaviours / scorers (repeatable)",
        }
    if command in ("evaluate", "report"):
        return {
            "--out": "the run folder holding the study (its study.json) "
            + ("whose trained cells to evaluate" if command == "evaluate" else "to report"),
            "--plugin": "import your module (or .py file) first: the registrations the study in --out names "
            "(repeatable)",
            "--device": "where the cells are evaluated (default: cuda when available)"
            if command == "evaluate"
            else "where the model runs if a missing per-seed file (split, noise floor) must be rebuilt; the "
            "report itself loads no model (default: cuda when available)",
            "--set": f"change how the finished study is read, not its results: only {', '.join(REPORT_SET_KEYS)} "
            "(the contrasts the headline reads as primary), e.g. "
            "--set 'primary_contrasts=[{a: probe_sft_1, b: base, metric: curated_auroc}]'",
        }
    if command == "demo":
        return {
            "--preset": f"the study to run a demo of: {presets} (default: demo)",
            "--out": "run folder (default: runs/<preset>); a demo continues the study already there (finished "
            "cells are kept)",
        }
    if command in ("build-data", "fit-probes", "train"):
        return {
            "--preset": f"{presets}: the study to start in a new --out (default: the study.json in --out; "
            f"without --out: {default_preset} in runs/{default_preset})",
            "--config": "a YAML/JSON study file to start in --out (default: the study.json in --out)",
            "--seeds": "number of seeds (0..N-1); more than the study in --out has extends it",
            "--out": "the run folder this step works on and continues (default: runs/<preset>)",
        }
    return {"--preset": f"{presets} (default: {default_preset}, or the --config file alone)"}


def _add_study_args(p: argparse.ArgumentParser, command: str, *, default_preset: str = "quick") -> None:
    """The study flags ``command`` uses (:data:`_COMMAND_FLAGS`), with help for that command; the defaults of
    the others, so the shared code reads every attribute."""
    offered, helps = _COMMAND_FLAGS[command], _command_help(command, default_preset)
    specs = {flag: (dest, default, kw) for flag, dest, default, kw in _STUDY_FLAGS}
    for flag in offered:  # in the command's order
        dest, default, kw = specs[flag]
        kw = {**kw, "help": helps.get(flag, kw.get("help"))}
        if flag == "--out" and command in ("evaluate", "report"):  # they read a study that must exist
            kw["required"] = True
        p.add_argument(flag, dest=dest, default=list(default) if isinstance(default, list) else default, **kw)
    for flag, (dest, default, _) in specs.items():
        if flag not in offered:
            p.set_defaults(**{dest: list(default) if isinstance(default, list) else default})
    p.set_defaults(default_preset=default_preset)


def _check_study_args(args) -> None:
    """Refuse contradictory, empty or impossible flags before anything is read, sampled or written."""
    if args.out is not None and not str(args.out).strip():
        raise UsageError("--out is empty; name a run folder (e.g. --out runs/my_study)")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; --out must be a folder (a run folder; created if missing)")
    if args.resume and args.overwrite:
        raise UsageError(
            "--resume continues the study in --out and --overwrite deletes it: pass --resume to continue it, "
            "or --overwrite to replace it"
        )
    if args.seeds is not None and args.seeds > MAX_SEEDS:  # (< 1 is refused with the config's own message)
        raise UsageError(f"--seeds {args.seeds}: the number of seeds must be between 1 and {MAX_SEEDS}")
    _check_device(args.device)
    if getattr(args, "fresh_data", False) and any(o.split("=", 1)[0].strip() == "data_source" for o in args.overrides):
        raise UsageError(
            "--fresh-data means --set data_source=fresh; pass one of them (--set data_source=... and "
            "--fresh-data contradict each other)"
        )
    if args.config_file is not None:
        _check_config_file(Path(args.config_file))


def _check_device(device: str | None) -> None:
    import re

    import torch

    if device is None:
        return
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise UsageError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device}: this machine has no CUDA device (or torch is a CPU build); use --device cpu"
        )
    if device.startswith("cuda:") and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")


def _check_config_file(path: Path) -> None:
    """A study file must be a non-empty YAML/JSON mapping (``probe-lens config`` writes one)."""
    import yaml

    if path.is_dir():
        raise UsageError(f"--config {path} is a folder; pass a study file (write one with `probe-lens config`)")
    if not path.is_file():
        return  # make_config names the missing file
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return  # make_config reports the parse error with its position
    if loaded is None or loaded == {}:
        raise UsageError(
            f"--config {path} is empty; a study file holds at least the keys you change "
            "(write a complete one with `probe-lens config --preset quick > study.yaml`)"
        )
    if not isinstance(loaded, dict):
        raise UsageError(
            f"--config {path} holds a YAML {type(loaded).__name__}, not a mapping of study keys "
            "(see `probe-lens config --preset quick`)"
        )


def _check_writable(out: Path) -> None:
    """``out`` (or the deepest folder above it that exists) must be writable."""
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write in {existing} (read-only or no permission); choose another folder")


def _import_plugins(plugins: list[str]) -> None:
    """Import each ``--plugin`` (a module name, found from the working folder too, or a ``.py`` file)."""
    import importlib
    import importlib.util

    for plugin in plugins:
        path = Path(plugin)
        try:
            if plugin.endswith(".py"):
                if not path.is_file():
                    raise UsageError(f"--plugin {plugin}: no such file")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                assert spec is not None and spec.loader is not None  # a .py file always has a loader
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` finds the working folder's
                    sys.path.insert(0, os.getcwd())
                importlib.import_module(plugin)
        except ModuleNotFoundError as e:
            if e.name != plugin and not plugin.startswith(f"{e.name}."):
                raise UsageError(f"--plugin {plugin} failed to import: {e} (--debug shows the traceback)") from e
            raise UsageError(
                f"--plugin {plugin}: no module named {e.name!r} (give an importable module name, run from the folder "
                "holding it, or pass the path of its .py file)"
            ) from e
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as e:  # the user's module raised: its error, named
            raise UsageError(
                f"--plugin {plugin} failed to import: {type(e).__name__}: {e} (--debug shows the traceback)"
            ) from e


def _config(args):
    """The resolved StudyConfig; a bad preset, flag, ``--set`` or study file raises UsageError."""
    import yaml

    from probe_lens.experiments import make_config

    _check_study_args(args)
    _import_plugins(getattr(args, "plugins", []))
    config_file, preset = args.config_file, args.preset
    saved = Path(args.out) / "study.json" if args.out else None
    reads_folder = args.command in _STEP_COMMANDS or getattr(args, "resume", False)
    if reads_folder and not preset and not config_file and saved is not None and saved.is_file():
        config_file = str(saved)  # a step on (or a resume of) an existing run folder: that study, unless told otherwise
    preset = preset or (None if config_file else args.default_preset)
    where = f"--config {config_file}" if config_file else "the study settings"
    overrides = list(args.overrides)
    behaviour, behaviour_file = getattr(args, "behaviour", None), getattr(args, "behaviour_file", None)
    if behaviour_file is not None:  # its name comes from the file unless --behaviour names it too
        overrides += [f"behaviour_file={json.dumps(behaviour_file)}", f"behaviour={json.dumps(behaviour)}"]
    elif behaviour is not None:
        overrides += [f"behaviour={json.dumps(behaviour)}", "behaviour_file=null"]
    try:
        cfg = make_config(preset, config_file=config_file, model=args.model, seeds=args.seeds, overrides=overrides)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{config_file} is not valid JSON ({e}); fix it or write a fresh one with `probe-lens config`"
        ) from e
    except yaml.YAMLError as e:
        raise UsageError(
            f"cannot parse {config_file or 'a --set value'} as YAML ({' '.join(str(e).split())}); "
            "--set values are YAML, e.g. --set seeds=[0,1] --set probe_sft.lr=1e-5"
        ) from e
    except KeyError as e:
        raise UsageError(f"bad value in {where}: {e.args[0] if e.args else e}") from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad value in {where}: {e}") from e
    if args.device:
        cfg.device = args.device
    if args.backend:
        cfg.backend = args.backend
    if getattr(args, "fresh_data", False):
        cfg.data_source = "fresh"
    return cfg


def _study(args, *, resume: bool | None = None, cfg=None, need_study: bool = False, reader: bool = False):
    """Open the study in ``--out`` (default ``runs/<preset>``); ``need_study``: refuse a folder without one;
    ``reader``: take no writer lock (unless --overwrite)."""
    from probe_lens.experiments import Study

    cfg = cfg if cfg is not None else _config(args)
    out = Path(args.out or f"runs/{cfg.preset}")
    has_study = (out / "study.json").is_file()
    if need_study and not has_study:
        raise UsageError(
            f"{out} holds no study (no study.json), so there is nothing to {args.command}; run "
            f"`probe-lens reproduce --out {out}` (or build-data, fit-probes, train) first, or point --out at a run folder"
        )
    if args.command in _STEP_COMMANDS and args.out and not has_study and not (args.preset or args.config_file):
        raise UsageError(
            f"--out {out} holds no study (no study.json); is the folder mistyped? To start a study there, name it: "
            f"`probe-lens {args.command} --out {out} --preset quick` (or --config FILE), or run "
            f"`probe-lens reproduce --out {out}`"
        )
    _check_writable(out)
    return Study(
        cfg,
        out,
        resume=args.resume if resume is None else resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        lock=not reader or args.overwrite,
    )


def _print_summary(study, summary, t0: float) -> None:
    from probe_lens.experiments.headline import headline_table

    if not study.dist.is_main:  # under torchrun, rank 0 speaks for the study
        return
    table = headline_table(summary, study.config, study.probe_names())
    keep = [
        c
        for c in table.columns
        if c in ("cell", "trains against", f"{study.names.noun} rate", "perplexity (neutral)")
        or " AUROC curated" in c
        and "held-out" not in c
        or c.endswith("_L" + str(study.config.probes.layer) + " cos(orig, refit)")
    ]
    print()
    print(table[keep].to_string(index=False))
    print(
        f"\nscorer: {study.scorer.describe().get('name')} {study.scorer.describe().get('version')}; "
        f"seeds: {study.config.seeds}; wall time {time.perf_counter() - t0:.0f} s"
    )
    print(f"headline (primary contrasts, table, paired contrasts): {study.out / 'headline.md'}")
    print(f"report: {study.out / 'report.html'}  table: {study.out / 'results.csv'}")


def cmd_demo(args) -> int:
    t0 = time.perf_counter()
    args.preset = args.preset or "demo"
    study = _study(args, resume=True)
    ds = study.build_data()
    c, names = ds.counts(), study.names
    keys, pos, neg = names.metric_keys, names.positive_label, names.negative_label
    print(
        f"\nprobe pool: {c['n_examples']} continuations of {len(study.pool_prompts)} provocative prompts, "
        f"{c[keys['n_positive']]} {pos} / {c[keys['n_negative']]} {neg} ({names.name}; scorer {ds.meta['scorer']['name']})"
    )
    for seed in study.config.seeds:
        i = study.seed_split(seed).info
        print(
            f"  seed {seed}: probes fit on {i['n_fit_rows']} {i.get('fit_rows_mode', 'balanced')} rows "
            f"({i[keys['n_fit_positive']]} {pos}); "
            f"on-policy evaluation rows {i['n_onpolicy_rows']} ({i[keys['n_onpolicy_positive']]} {pos}); "
            f"prompt-topic-only AUROC {i['baseline/auroc_prompt_topic']:.3f}"
        )
    summary = study.run()
    _print_summary(study, summary, t0)
    return 0


def cmd_reproduce(args) -> int:
    if getattr(args, "dry_run", False):
        return _dry_run(args)
    t0 = time.perf_counter()
    cfg = _with_launch_flags(_config(args), args)
    if cfg.launch.executor == "inprocess" and cfg.launch.log == "none":
        study = _study(args, cfg=cfg)
        summary = study.run()
    else:
        from probe_lens.launch import launch

        study = _study(args, cfg=cfg)
        summary = launch(study, args.plugins)
        if summary is None:  # submitted to Slurm: nothing finished here
            return 0
    _print_summary(study, summary, t0)
    return 0


def _with_launch_flags(cfg, args):
    """``--executor`` / ``--workers`` / ``--log`` over the study's ``launch`` section."""
    import dataclasses

    changes = {k: v for k in ("executor", "workers", "log") if (v := getattr(args, k, None)) is not None}
    if changes:
        try:
            cfg.launch = dataclasses.replace(cfg.launch, **changes)
        except ValueError as e:
            raise UsageError(str(e)) from e
    return cfg


def cmd_status(args) -> int:
    """Each task of the study in --out: its state, attempts, process and log; how to rerun a failed one."""
    from probe_lens.experiments.config import StudyConfig
    from probe_lens.launch import TaskBook, study_tasks

    out = Path(args.out)
    if not (out / "study.json").is_file():
        raise UsageError(f"{out} holds no study (no study.json); point --out at a run folder")
    cfg = StudyConfig.load(out / "study.json")
    book = TaskBook(out)
    rows = [book.state(t, cfg) for t in study_tasks(cfg)]
    width = max(len(r["task"]) for r in rows)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "failed", "pending")}
    print(f"{out}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in rows:
        where = f"pid {r['pid']} on {r.get('host')}" if r.get("pid") else ""
        if r.get("slurm_job"):
            where += f" (Slurm job {r['slurm_job']})"
        line = f"  {r['task']:<{width}}  {r['state']:<8} {where}"
        if r["state"] == "failed":
            line += f"\n      error: {r.get('error')}\n      log: {r['log']}\n      rerun: probe-lens task --out {out} {r['task']}"
        print(line)
    return 0


def cmd_task(args) -> int:
    """Run one task of the study in --out in this process (a failed or missing one, alone)."""
    from probe_lens.launch import run_task

    out = Path(args.out)
    if not (out / "study.json").is_file():
        raise UsageError(f"{out} holds no study (no study.json); point --out at a run folder")
    _import_plugins(args.plugins)
    result = run_task(out, args.task, plugins=[], export_png=False)
    print(f"task {args.task}: done")
    if args.task == "finalise" and result is not None:
        print(f"headline: {out / 'headline.md'}  report: {out / 'report.html'}")
    return 0


def _dry_run(args) -> int:
    """Print the study's plan (counts, steps, tokens, FLOPs, memory) without loading the model."""
    from probe_lens.experiments.plan import estimate_plan, format_plan

    cfg = _config(args)
    try:
        plan = estimate_plan(cfg, dtype=args.dtype)
    except (ValueError, AttributeError) as e:
        raise UsageError(f"cannot plan this study: {e}") from e
    print(format_plan(plan))
    return 0


def cmd_build_data(args) -> int:
    study = _study(args, resume=True)
    ds = study.build_data()
    folder = next((p.parent for p in sorted((study.out / "data").glob("*/meta.json"))), study.out / "data")
    print(json.dumps({"folder": str(folder), **ds.counts(), "shortfall": ds.meta.get("shortfall")}, indent=2))
    return 0


def cmd_build_reference(args) -> int:
    """Sample the reference continuations of every prompt with the given tags (resumable)."""
    import subprocess

    from probe_lens.data import load_prompts
    from probe_lens.data.reference import ReferenceConfig, build_reference
    from probe_lens.models import load_model
    from probe_lens.scorers import get_scorer

    try:
        cfg = ReferenceConfig(
            samples_per_prompt=args.samples_per_prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            batch_size=args.batch_size,
            fast=not args.no_fast,
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder; build-reference writes a file: pass e.g. --out {out / 'my_ref.jsonl.gz'}"
        )
    if not out.name.endswith(".jsonl.gz"):
        raise UsageError(
            f"--out {out}: a reference set is a .jsonl.gz file; pass e.g. --out {out.with_suffix('')}.jsonl.gz"
        )
    _check_writable(out.parent)
    _check_device(args.device)
    prompts = [p for p in load_prompts() if p.tag in args.tags]
    if not prompts:
        raise UsageError(f"no embedded prompt has a tag in {args.tags}; tags are 'provocative' and 'neutral'")
    root = Path(__file__).resolve().parent.parent
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    provenance = {
        "command": "probe-lens " + shlex.join(args.argv),
        "commit": commit,
        "uncommitted_changes": dirty,
        "tags": args.tags,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    model = load_model(args.model, device=args.device)
    scorer = get_scorer(args.scorer)
    ref = build_reference(
        model, prompts, scorer, cfg, out=args.out, provenance=provenance, progress=not args.no_progress
    )
    print(json.dumps({"file": str(args.out), **ref.counts()}, indent=2))
    return 0


def cmd_fit_probes(args) -> int:
    import pandas as pd

    study = _study(args, resume=True)
    for seed in study.config.seeds:  # each seed fits its own probes
        study.fit_probes(seed)
    for report in sorted((study.out / "probes").glob("**/report.csv")):
        print(f"{report.parent.relative_to(study.out)}:\n{pd.read_csv(report).to_string(index=False)}")
    return 0


def _fmt(v, spec: str = ".3f") -> str:
    """A number for a one-line summary; "n/a" for None/NaN/non-numbers."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else format(v, spec)


def cmd_train(args) -> int:
    cfg = _config(args)
    cells = args.cell or cfg.cells
    seeds = args.seed if args.seed else cfg.seeds
    bad_cells = [c for c in cells if c not in cfg.cells]
    if bad_cells:
        raise UsageError(f"unknown --cell {', '.join(bad_cells)}; this study's cells are: {', '.join(cfg.cells)}")
    bad_seeds = [s for s in seeds if s not in cfg.seeds]
    if bad_seeds:
        raise UsageError(
            f"--seed {', '.join(map(str, bad_seeds))} is not a seed of this study; its seeds are: "
            f"{', '.join(map(str, cfg.seeds))} (change them with --seeds N or --set seeds=[...])"
        )
    study = _study(args, resume=True, cfg=cfg)
    for seed in seeds:
        for cell in cells:
            finished = study.is_done(cell, seed)  # read back, not trained again
            r = study.run_cell(cell, seed)
            rate = f"{study.names.noun} rate {_fmt(r.get(study.names.metric_keys['rate']))}"
            print(
                f"{cell} seed {seed}: {rate}"
                + (" (already finished: read back, not trained again)" if finished else "")
            )
    return 0


def cmd_evaluate(args) -> int:
    cfg = _config(args)
    finished = all((Path(args.out or f"runs/{cfg.preset}") / "cells" / c / f"seed{s}" / "eval.json").exists()
                   for c in cfg.cells for s in cfg.seeds)  # fmt: skip
    study = _study(args, resume=True, cfg=cfg, need_study=True, reader=finished)  # a finished study: only read
    n = study.evaluate_pending()
    print(f"evaluated {n} cell(s) whose training had finished without an evaluation")
    return 0


def cmd_report(args) -> int:
    t0 = time.perf_counter()
    changed = [k for o in args.overrides if (k := o.split("=", 1)[0].strip()) not in REPORT_SET_KEYS]
    if changed:  # anything else would be another study than the one whose cells are in --out
        raise UsageError(
            f"report --set {changed[0]}: the report reads the study in --out as it ran; --set here changes only "
            f"{', '.join(REPORT_SET_KEYS)} (which contrasts the headline reads as primary). To change "
            f"{changed[0]}, run it as a new study: probe-lens reproduce --config {Path(args.out) / 'study.json'} "
            f"--set {changed[0]}=... --out ANOTHER_FOLDER"
        )
    study = _study(args, resume=True, need_study=True, reader=True)
    summary = study.report()
    _print_summary(study, summary, t0)
    return 0


def cmd_config(args) -> int:
    import yaml

    cfg = _config(args)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """An unrecognized flag is refused by the subcommand it was given to (its usage, exit 2), naming the
    subcommands that have it."""

    commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            cmd = self.commands.get(getattr(ns, "command", None) or "", self)
            elsewhere = {
                flag: [n for n, p in self.commands.items() if flag in p._option_string_actions]
                for flag in (x.split("=", 1)[0] for x in extra)
                if flag.startswith("--")
            }
            notes = [f"{f} is a flag of: {', '.join(names)}" for f, names in elsewhere.items() if names]
            cmd.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(notes)})" if notes else ""))
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="probe-lens", description="Fine-tune against probes; see whether they keep working.", allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    specs = [
        ("demo", cmd_demo, "a small slice of the study on the embedded model (< 10 min on 2 CPU cores)", "demo"),
        ("reproduce", cmd_reproduce, "the whole study: data, probes, every cell and seed, table and report", "quick"),
        ("build-data", cmd_build_data, "step 1: the labelled activation set from the base model", "quick"),
        ("fit-probes", cmd_fit_probes, "step 2: trained-against and held-out probes", "quick"),
        ("train", cmd_train, "step 3: training cells (each is evaluated when it finishes)", "quick"),
        ("evaluate", cmd_evaluate, "step 4: evaluate cells whose training finished but not their evaluation", "quick"),
        ("report", cmd_report, "step 5: results table, summary with CIs, report.html", "quick"),
        ("config", cmd_config, "print a preset as a study file (YAML)", "quick"),
    ]
    p = sub.add_parser(
        "build-reference",
        allow_abbrev=False,
        help="sample the reference continuations a study reads instead of sampling",
        description="Sample every embedded prompt with the given tags, score the continuations and "
        "write them (tokens, texts, scores, per-row seeds) as a gzipped JSONL with a provenance file.",
    )
    p.add_argument("--out", required=True, help="the .jsonl.gz to write (parts go to <out>.parts/ and resume)")
    p.add_argument(
        "--model", default=None, help="TransformerLens name or local HF folder (default: embedded Gemma-3-270M)"
    )
    p.add_argument("--tags", nargs="+", default=["provocative"], help="prompt tags to sample (default: provocative)")
    p.add_argument("--samples-per-prompt", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--scorer", default="auto", help="output classifier (default: auto)")
    p.add_argument("--no-fast", action="store_true", help="sample with the reference path instead of fast sampling")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_build_reference)
    for name, fn, help_, default in specs:
        # allow_abbrev=False: a flag this subcommand lacks is refused, not read as a prefix of another
        # (``fit-probes --seed 2`` is not ``--seeds 2``)
        p = sub.add_parser(name, help=help_, description=help_, allow_abbrev=False)
        _add_study_args(p, name, default_preset=default)
        if name == "reproduce":
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="print the plan (continuations, steps, tokens, FLOPs, memory per process) and exit; loads no weights",
            )
            p.add_argument(
                "--dtype",
                default="float32",
                choices=["float32", "bfloat16", "float16"],
                help="weight dtype of the --dry-run estimate (default float32)",
            )
        if name == "reproduce":
            p.add_argument(
                "--executor",
                choices=("inprocess", "local", "submitit"),
                default=None,
                help="where the (cell, seed) tasks run: this process (default), --workers local processes, or a "
                "Slurm job array (the study's launch section holds the Slurm settings)",
            )
            p.add_argument("--workers", type=int, default=None, help="worker processes of --executor local (default 2)")
            p.add_argument(
                "--log", choices=("none", "wandb", "trackio"), default=None, help="experiment tracker (default none)"
            )
        if name == "train":
            p.add_argument("--cell", action="append", default=[], help="cell(s) to run (default: all in the study)")
            p.add_argument("--seed", type=int, action="append", default=[], help="seed(s) to run (default: all)")
        p.set_defaults(func=fn)
    p = sub.add_parser(
        "status", allow_abbrev=False, help="each task of a study: pending, running, done or failed (with its log)"
    )
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "task", allow_abbrev=False, help="run one task of a study alone: prepare, cell/<cell>/seed<s> or finalise"
    )
    p.add_argument("task", help="the task, as `probe-lens status` names it")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=cmd_task)
    parser.commands = dict(sub.choices)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can cause and fix (input, files, weights, disk): exit code 2, no traceback."""
    import yaml

    from probe_lens._disk import DiskSpaceError
    from probe_lens.data.builder import ScorerOutputError
    from probe_lens.data.loaders import DatasetUnavailableError
    from probe_lens.experiments.runner import StudyFolderError
    from probe_lens.models.loading import ModelUnavailableError
    from probe_lens.scorers.base import ScorerUnavailableError
    from probe_lens.training.checkpoint import CheckpointError

    return (
        UsageError,
        StudyFolderError,
        ModelUnavailableError,
        ScorerUnavailableError,
        DatasetUnavailableError,
        CheckpointError,
        ScorerOutputError,
        DiskSpaceError,
        FileNotFoundError,
        FileExistsError,
        yaml.YAMLError,
        ValueError,  # the library's bad-input errors (json.JSONDecodeError included)
    )


def _rerun(command: str) -> str:
    """How to continue after an interruption: only ``reproduce`` has ``--resume`` (the other steps always continue)."""
    return (
        "rerun the same command with --resume"
        if "--resume" in _COMMAND_FLAGS.get(command, ())
        else ("rerun the same command (finished work is kept)")
    )


def _describe(e: BaseException, command: str) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"a JSON file of the run folder is truncated or corrupt ({e}); rerun with --debug to see which"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"the disk is full ({e}); free some space, then {_rerun(command)}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "no_progress", False):  # no progress bars: plain log lines say where a long run is
        logging.getLogger("probe_lens").setLevel(logging.INFO)
    debug = args.debug or os.environ.get("PROBE_LENS_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    prog = f"probe-lens {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted; {_rerun(args.command)} to continue", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        if isinstance(e, _user_errors()) or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
            print(f"{prog}: error: {_describe(e, args.command)}", file=sys.stderr)
            return 2
        print(
            f"{prog}: internal error (please report): {type(e).__name__}: {e}\n"
            "rerun with --debug (or PROBE_LENS_DEBUG=1) to see the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
