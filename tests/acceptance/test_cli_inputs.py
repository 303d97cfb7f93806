"""Mistakes on the command line are refused before anything is read, sampled or written: exit 2, one
paragraph naming the flag, nothing created (issues 25 and 26: the traps a new user and a hostile-input
battery found). No model is loaded: every case fails in the argument checks."""

from pathlib import Path

import pytest

from probe_lens.cli import MAX_SEEDS, main


def _refused(capsys, argv, *words, created: Path | None = None) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w in err, (w, err)
    if created is not None:
        assert not created.exists(), f"{created} was created by a refused command"
    return err


@pytest.mark.parametrize("command", ["train", "build-data", "fit-probes"])
def test_a_step_on_a_mistyped_folder_does_not_start_a_study(capsys, tmp_path, command):
    out = tmp_path / "runs" / "nope"
    _refused(capsys, [command, "--out", str(out)], f"--out {out} holds no study", "mistyped", created=out)


def test_empty_out_and_a_file_as_out(capsys, tmp_path):
    _refused(capsys, ["reproduce", "--out", ""], "--out is empty")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(capsys, ["reproduce", "--out", str(afile)], "is a file; --out must be a folder")
    assert afile.read_text() == "x"


def test_resume_with_overwrite_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    _refused(
        capsys, ["reproduce", "--out", str(out), "--resume", "--overwrite"], "--resume", "--overwrite", created=out
    )


@pytest.mark.parametrize(
    ("seeds", "words"),
    [
        ("0", "--seeds must be >= 1"),
        ("-3", "--seeds must be >= 1"),
        (str(MAX_SEEDS + 1), "between 1 and"),
        ("100000000000", "between 1 and"),
    ],
)
def test_impossible_seed_counts(capsys, tmp_path, seeds, words):
    _refused(capsys, ["reproduce", "--out", str(tmp_path / "r"), "--seeds", seeds], words, created=tmp_path / "r")


def test_bad_devices(capsys, tmp_path):
    import torch

    _refused(capsys, ["reproduce", "--out", str(tmp_path / "r"), "--device", "banana"], "'banana' is not a device")
    if not torch.cuda.is_available():
        _refused(capsys, ["reproduce", "--out", str(tmp_path / "r"), "--device", "cuda"], "no CUDA device")
    assert not (tmp_path / "r").exists()


def test_fresh_data_contradicting_a_data_source(capsys, tmp_path):
    argv = ["reproduce", "--out", str(tmp_path / "r"), "--fresh-data", "--set", "data_source=reference"]
    _refused(capsys, argv, "--fresh-data", "contradict", created=tmp_path / "r")


@pytest.mark.parametrize(
    ("content", "words"),
    [("", "is empty"), ("# only a comment\n", "is empty"), ("{}\n", "is empty"), ("- a\n- b\n", "YAML list"),
     ("42\n", "YAML int"), (None, "is a folder")],
)  # fmt: skip
def test_study_files_that_are_not_studies(capsys, tmp_path, content, words):
    f = tmp_path / "study.yaml"
    if content is None:
        f.mkdir()
    else:
        f.write_text(content)
    _refused(capsys, ["reproduce", "--config", str(f), "--out", str(tmp_path / "r")], f"--config {f}", words,
             created=tmp_path / "r")  # fmt: skip


def test_an_unwritable_out_names_the_flag(capsys, tmp_path, monkeypatch):
    # a read-only file system (as root, permission bits do not stop a write; os.access sees a read-only mount)
    monkeypatch.setattr("probe_lens.cli.os.access", lambda path, mode: Path(path) != tmp_path)
    _refused(capsys, ["reproduce", "--out", str(tmp_path / "r")], f"--out {tmp_path / 'r'}", "read-only")


def test_build_reference_checks_its_output_before_sampling(capsys, tmp_path):
    _refused(capsys, ["build-reference", "--out", str(tmp_path)], "is a folder", "writes a file")
    _refused(capsys, ["build-reference", "--out", str(tmp_path / "ref.txt")], ".jsonl.gz")


def test_preset_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    from probe_lens.experiments.presets import PRESETS

    out = " ".join(capsys.readouterr().out.split())
    assert " | ".join(PRESETS) in out and "contrast" in out
