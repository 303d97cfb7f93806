"""One writer per run folder, and ``--overwrite`` in two phases (issue 26, deliverables 2 and 3, row 1).

The lock is tested with real processes: a holder in a subprocess, a second writer through the command
line in another; a holder killed with SIGKILL leaves a stale lock that the next writer takes over. No
model is loaded (a Study opens its folder before it loads anything).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from probe_lens.experiments import FolderLockedError, Study
from probe_lens.experiments.run_folder import LOCK_NAME, RunFolder, lock_folder, unlock_folder
from probe_lens.testing import tiny_study_config

REPO = Path(__file__).resolve().parents[2]
HOLD = "import sys; from probe_lens.experiments.run_folder import lock_folder; lock_folder(sys.argv[1]); print('held', flush=True); sys.stdin.read()"  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def _holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=_env(), cwd=REPO)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probe_lens.cli", *argv], capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=300)  # fmt: skip


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME
    }


def _study_folder(root: Path, **overrides) -> Path:
    """A folder holding the tiny study's identity files (no model loaded), its lock given back."""
    Study(tiny_study_config(**overrides), root, progress=False)
    unlock_folder(root)
    return root


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    root = _study_folder(tmp_path / "run")
    before = _snapshot(root)
    holder = _holder(root)
    try:
        r = _cli("train", "--out", str(root), "--no-progress")
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        for w in (f"pid {holder.pid}", "host", "started", "one writer per run folder"):
            assert w in r.stderr, (w, r.stderr)
        assert _snapshot(root) == before  # the refused writer changed nothing
        # a reader takes no lock: it opens the folder while the writer holds it
        Study(tiny_study_config(), root, resume=True, progress=False, lock=False)
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            Study(tiny_study_config(), root, resume=True, progress=False)
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    root = tmp_path / "run"
    holder = _holder(root)
    dead = holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((root / LOCK_NAME).read_text())["pid"] == dead  # the dead holder's record is still there
    with caplog.at_level(logging.WARNING):
        lock_folder(root)
    try:
        assert f"taking over the lock left by pid {dead}" in caplog.text
        held = json.loads((root / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid() and set(held) == {"pid", "host", "started"}
        lock_folder(root)  # this process holds it already: a no-op, not a refusal
    finally:
        unlock_folder(root)
    assert (root / LOCK_NAME).read_text() == ""  # given back: nobody holds it


def test_the_lock_is_given_back_when_the_writer_exits(tmp_path):
    root = tmp_path / "run"
    holder = _holder(root)
    holder.communicate("")  # stdin closed: the holder exits normally
    assert (root / LOCK_NAME).read_text() == ""
    lock_folder(root)
    unlock_folder(root)


# ---- --overwrite, two-phase -----------------------------------------------------------------------
def test_overwrite_replaces_the_study_and_leaves_nothing_aside(tmp_path):
    root = _study_folder(tmp_path / "run")
    (root / "cells").mkdir()
    (root / "cells" / "old_marker").write_text("old")
    Study(tiny_study_config(n_probe_prompts=40), root, overwrite=True, progress=False)
    unlock_folder(root)
    assert json.loads((root / "study.json").read_text())["n_probe_prompts"] == 40
    assert not (root / "cells" / "old_marker").exists()
    assert list(tmp_path.glob("run.old-*")) == []


def test_overwrite_that_fails_before_study_json_puts_the_old_study_back(tmp_path, monkeypatch):
    root = _study_folder(tmp_path / "run")
    (root / "precious.txt").write_text("finished results")
    before = _snapshot(root)

    def fail(self, config, record):
        (self.root / "half").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunFolder, "_write_identity", fail)
    with pytest.raises(OSError, match="No space"):
        Study(tiny_study_config(n_probe_prompts=40), root, overwrite=True, progress=False)
    assert _snapshot(root) == before
    assert list(tmp_path.glob("run.old-*")) == []
    unlock_folder(root)


def test_overwrite_with_an_invalid_new_study_deletes_nothing(tmp_path):
    """Row 1: the new study is checked completely before the old one is touched."""
    root = _study_folder(tmp_path / "run")
    before = _snapshot(root)
    with pytest.raises(ValueError):
        Study(tiny_study_config(probes={"layer": 99}), root, overwrite=True, progress=False)
    assert _snapshot(root) == before


KILLED_OVERWRITE = """
import os, signal, sys
from probe_lens.experiments import Study
from probe_lens.experiments.run_folder import RunFolder
from probe_lens.testing import tiny_study_config
RunFolder._write_identity = lambda self, c, r: os.kill(os.getpid(), signal.SIGKILL)
Study(tiny_study_config(n_probe_prompts=40), sys.argv[1], overwrite=True, progress=False)
"""


def test_an_overwrite_killed_midway_leaves_the_old_study_whole_and_named(tmp_path, caplog):
    root = _study_folder(tmp_path / "run")
    (root / "precious.txt").write_text("finished results")
    before = _snapshot(root)
    r = subprocess.run([sys.executable, "-c", KILLED_OVERWRITE, str(root)], env=_env(), cwd=REPO, timeout=300,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    (aside,) = tmp_path.glob("run.old-*")
    assert _snapshot(aside) == before  # the old study, whole
    assert str(aside) in r.stderr  # the killed run said where it put it
    with caplog.at_level(logging.WARNING):  # the next run names it too
        Study(tiny_study_config(n_probe_prompts=40), root, progress=False)
    unlock_folder(root)
    assert str(aside) in caplog.text and "interrupted --overwrite" in caplog.text


def test_a_refused_open_keeps_no_lock(tmp_path):
    """A notebook that was told "holds a different study" must not block the folder's owner afterwards."""
    from probe_lens.experiments import StudyFolderError

    root = _study_folder(tmp_path / "run")
    with pytest.raises(StudyFolderError, match="different study"):
        Study(tiny_study_config(n_probe_prompts=40), root, progress=False)
    assert (root / LOCK_NAME).read_text() == ""  # given back
    _holder(root).communicate("")  # another process can take it
