"""Each ``probe-lens`` subcommand offers only the flags its code uses (issue 25, item 10: every subcommand
listed all 16 study flags). The expected sets below are written out by hand (the oracle): a flag added to or
dropped from a subcommand must be a decision recorded here. Nothing here loads a model or runs a study."""

import argparse
import inspect
import re

import pytest

from probe_lens import cli
from probe_lens.cli import build_parser, main
from probe_lens.experiments.presets import PRESETS

DEFINE = {"--preset", "--config", "--model", "--behaviour", "--behaviour-file", "--seeds", "--set", "--fresh-data"}
RUNTIME = {"--plugin", "--device", "--backend", "--no-progress", "--debug"}

EXPECTED = {
    # always continues the study in --out: no --resume
    "demo": DEFINE | {"--out", "--overwrite"} | RUNTIME,
    "reproduce": DEFINE
    | {"--out", "--resume", "--overwrite"}
    | RUNTIME
    | {"--dry-run", "--dtype", "--executor", "--workers", "--log"},
    "build-data": DEFINE | {"--out", "--overwrite"} | RUNTIME,
    "fit-probes": DEFINE | {"--out", "--overwrite"} | RUNTIME,
    "train": DEFINE | {"--out", "--overwrite"} | RUNTIME | {"--cell", "--seed"},
    # read the study saved in --out
    "evaluate": {"--out", "--plugin", "--device", "--no-progress", "--debug"},
    "report": {"--out", "--set", "--plugin", "--device", "--no-progress", "--debug"},
    # prints a study file: no folder, no device, no progress
    "config": DEFINE | {"--plugin", "--backend", "--debug"},
    "build-reference": {
        "--out",
        "--model",
        "--tags",
        "--samples-per-prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--seed",
        "--batch-size",
        "--scorer",
        "--no-fast",
        "--device",
        "--no-progress",
        "--debug",
    },  # fmt: skip
    "status": {"--out", "--debug"},
    "task": {"--out", "--plugin", "--debug"},
}
ALL_FLAGS = set().union(*EXPECTED.values())
REQUIRED = {  # what each subcommand needs to parse at all
    "evaluate": ["--out", "x"],
    "report": ["--out", "x"],
    "status": ["--out", "x"],
    "task": ["prepare", "--out", "x"],
    "build-reference": ["--out", "x.jsonl.gz"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _listed(p: argparse.ArgumentParser) -> set[str]:
    """The flags a subcommand's --help lists (its option lines), --help itself aside."""
    flags = {m.group(1) for line in p.format_help().splitlines() if (m := re.match(r"^  (?:-h, )?(--[\w-]+)", line))}
    return flags - {"--help"}


def test_every_subcommand_is_covered():
    assert set(_subparsers()) == set(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_help_lists_exactly_the_flags_of_the_subcommand(command):
    p = _subparsers()[command]
    assert _listed(p) == EXPECTED[command]
    assert {s for a in p._actions for s in a.option_strings} - {"-h", "--help"} == EXPECTED[command]


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_a_flag_of_another_subcommand_is_refused(command, capsys):
    """argparse's own error (exit 2, the subcommand's usage, no traceback), naming who has the flag; no prefix
    matching (``fit-probes --seed 2`` is not ``--seeds 2``)."""
    for flag in sorted(ALL_FLAGS - EXPECTED[command]):
        with pytest.raises(SystemExit) as e:
            main([command, *REQUIRED.get(command, []), flag])
        assert e.value.code == 2, flag
        err = capsys.readouterr().err
        assert f"probe-lens {command}: error: unrecognized arguments: {flag}" in err, err
        assert f"{flag} is a flag of: " in err and "Traceback" not in err, err


def test_an_abbreviation_is_not_another_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit-probes", "--seed", "2"])
    assert e.value.code == 2
    assert "unrecognized arguments: --seed 2 (--seed is a flag of: build-reference, train)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_evaluate_and_report_need_the_run_folder(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command])
    assert e.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def _reads(*fns) -> set[str]:
    """The ``args`` attributes these functions read (``args.x`` and ``getattr(args, "x", ...)``)."""
    src = "\n".join(inspect.getsource(f) for f in fns)
    return set(re.findall(r"\bargs\.([a-z_]+)\b", src)) | set(re.findall(r'getattr\(args, "([a-z_]+)"', src))


PATHS = {
    "demo": [cli.cmd_demo],
    "reproduce": [cli.cmd_reproduce, cli._dry_run, cli._with_launch_flags],
    "build-data": [cli.cmd_build_data],
    "fit-probes": [cli.cmd_fit_probes],
    "train": [cli.cmd_train],
    "evaluate": [cli.cmd_evaluate],
    "report": [cli.cmd_report],
    "config": [cli.cmd_config],
}


@pytest.mark.parametrize("command", sorted(PATHS))
def test_every_attribute_the_code_path_reads_exists(command):
    """A flag a subcommand no longer offers still has its default on ``args`` (set_defaults)."""
    shared = [cli._check_study_args, cli._config, cli._study, cli.main]
    wanted = _reads(*shared, *PATHS[command]) - {"argv"}  # main sets argv itself
    ns = build_parser().parse_args([command, *REQUIRED.get(command, [])])
    assert {"preset", "out", "overrides", "plugins", "no_progress"} <= wanted  # the scan found the shared reads
    missing = sorted(a for a in wanted if not hasattr(ns, a))
    assert not missing, missing


@pytest.mark.parametrize("command", sorted(c for c, flags in EXPECTED.items() if "--preset" in flags))
def test_preset_help_names_every_preset(command):
    text = " ".join(_subparsers()[command].format_help().split())
    assert all(name in text for name in PRESETS), (list(PRESETS), text)


def test_report_set_changes_only_how_the_study_is_read(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["report", "--out", str(out), "--set", "probes.C=2"]) == 2
    err = capsys.readouterr().err
    assert "report --set probes.C" in err and "primary_contrasts" in err and "reproduce --config" in err, err
    assert not out.exists()
    # primary_contrasts passes that check (and then meets the folder's own: it holds no study)
    contrasts = "primary_contrasts=[{a: probe_sft_1, b: base, metric: curated_auroc}]"
    assert main(["report", "--out", str(out), "--set", contrasts]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("command", "hint"), [("reproduce", "with --resume"), ("train", "(finished work is kept)")])
def test_an_interrupt_names_a_flag_only_where_it_exists(command, hint, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    assert main([command]) == 130
    err = capsys.readouterr().err
    assert f"probe-lens {command}: interrupted; rerun the same command {hint} to continue" in err
