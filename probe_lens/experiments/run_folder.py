"""The run folder: where each of a study's files lives, which study a folder holds, and the JSON and
generation files the study writes there.

Layout::

    study.json                      resolved StudyConfig (``behaviour`` names what it detects and trains against)
    behaviour.json                  the behaviour's record: class names, scorer, threshold, metric keys
    prompts.json                    the fixed prompt plan: evaluation prompts, probe pool, training pool
    data/probe_pool/                the base model's continuations of the pool prompts (builder format)
    data/probe_pool_tokens.safetensors   the pool's response-token activations at the token probes' hook
    seeds/<s>/split.json            this seed's probe-fit / on-policy prompts and rows, prompt-only baselines
    seeds/<s>/noise_floor.json      cosine between each probe and its bootstrap re-fits on the base model
    seeds/<s>/monitor_thresholds.json   each probe's thresholds at 1% / 5% FPR on the base model's benign rows
    seeds/<s>/train_data/           the shared training samples of seed s, scored by every signal
    probes/seed<s>/<name>/          this seed's tracked probes (safetensors + JSON), report.csv
    cells/<cell>/seed<s>/train/     config.json, metrics.jsonl, checkpoints/ (training cells)
    cells/<cell>/seed<s>/eval.json  final evaluation: the cell is finished when this exists
    cells/<cell>/seed<s>/probe_scores.json   every tracked probe's score on every evaluation row
    results.csv, results.parquet    one row per (cell, seed)
    summary.csv, summary.md         mean and 95% CI over seeds per cell (every metric)
    headline.md, contrasts.csv      the headline table and the paired contrasts, in words
    metrics.parquet                 every telemetry row of every run
    report.html, assets/*.png       the drift report
    .lock                           the writer lock: the holder's pid, host and start time (empty when free)

One writer per folder: a process that writes a study holds an advisory lock (``fcntl.flock`` on ``.lock``)
for the rest of its life (under torchrun, rank 0 alone); a second writer is refused naming the holder, and
a lock left by a process that died is taken over with a warning. Readers (``report``) take no lock.
``--overwrite`` is two-phase: the old folder is renamed aside (``<out>.old-<time>``) and deleted only after
the new study has written its ``study.json``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from probe_lens._io import atomic_write
from probe_lens.behaviours import DEFAULT_BEHAVIOUR
from probe_lens.models import Generation

log = logging.getLogger(__name__)


class StudyFolderError(ValueError):
    """The output folder holds another study, or a finished one without --resume."""


class FolderLockedError(StudyFolderError):
    """Another live process holds the run folder's writer lock."""


LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # resolved folder -> open fd of its locked .lock file (this process's locks)


def lock_folder(root: str | Path) -> None:
    """Hold ``root``'s writer lock until this process exits (a no-op when this process holds it already).

    Raises :class:`FolderLockedError` naming the holder when another live process holds it. A lock file
    left by a process that no longer holds it (killed, crashed) is taken over with a warning.
    """
    root = Path(root)
    key = root.resolve()
    if key in _HELD:
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise FolderLockedError(
            f"{root} is being written by another process ({_describe_holder(holder)}): one writer per run "
            "folder. Wait for it to finish (or stop it), or choose another --out; reading it (`probe-lens "
            "report`) needs no lock"
        ) from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            os.close(fd)
            raise
        _check_holder_alive(root, fd)  # a filesystem without flock: the pid in the file is all there is
    previous = _read_holder(fd)
    if previous:
        log.warning(
            "%s: taking over the lock left by %s, which no longer holds it (it was killed or crashed, or the "
            "folder was copied); finished steps are kept", root, _describe_holder(previous)
        )  # fmt: skip
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    _HELD[key] = fd


def unlock_folder(root: str | Path) -> None:
    """Give back ``root``'s writer lock if this process holds it (the file is emptied: nobody holds it)."""
    fd = _HELD.pop(Path(root).resolve(), None)
    if fd is not None:
        _release(fd)


def _release(fd: int) -> None:
    with contextlib.suppress(OSError):  # a folder already deleted, a read-only remount: the flock goes anyway
        os.ftruncate(fd, 0)
    os.close(fd)


@atexit.register
def _release_all() -> None:
    while _HELD:
        _release(_HELD.popitem()[1])


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, OSError):
        return {"pid": "?", "host": "?", "started": "?"}
    return holder if isinstance(holder, dict) else {}


def _describe_holder(h: dict[str, Any]) -> str:
    return f"pid {h.get('pid', '?')} on host {h.get('host', '?')}, started {h.get('started', '?')}"


def _check_holder_alive(root: Path, fd: int) -> None:
    """Without ``flock``: refuse when the recorded holder runs on this host and its pid is alive."""
    h = _read_holder(fd)
    if h.get("host") != socket.gethostname() or not isinstance(h.get("pid"), int) or h["pid"] == os.getpid():
        return
    try:
        os.kill(h["pid"], 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass  # alive, another user's
    os.close(fd)
    raise FolderLockedError(f"{root} is being written by another process ({_describe_holder(h)}); wait for it")


class RunFolder:
    """The paths of one study's run folder (nothing is created until written)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    study_json = property(lambda self: self.root / "study.json")
    probe_pool = property(lambda self: self.root / "data" / "probe_pool")
    probe_pool_tokens = property(lambda self: self.root / "data" / "probe_pool_tokens.safetensors")
    prompts_json = property(lambda self: self.root / "prompts.json")
    timings_json = property(lambda self: self.root / "timings.json")

    def seed_dir(self, seed: int) -> Path:
        return self.root / "seeds" / str(seed)

    def split_json(self, seed: int) -> Path:
        return self.seed_dir(seed) / "split.json"

    def noise_floor_json(self, seed: int) -> Path:
        return self.seed_dir(seed) / "noise_floor.json"

    def monitor_thresholds_json(self, seed: int) -> Path:
        return self.seed_dir(seed) / "monitor_thresholds.json"

    def train_data(self, seed: int) -> Path:
        return self.seed_dir(seed) / "train_data"

    def probes(self, seed: int) -> Path:
        return self.root / "probes" / f"seed{seed}"

    def cell_dir(self, cell: str, seed: int) -> Path:
        return self.root / "cells" / cell / f"seed{seed}"

    def is_done(self, cell: str, seed: int) -> bool:
        """A cell is finished when its ``eval.json`` exists."""
        return (self.cell_dir(cell, seed) / "eval.json").exists()

    def cell_files(self, name: str) -> list[tuple[str, int, Path]]:
        """``(cell, seed, path)`` of every ``cells/<cell>/seed<s>/<name>`` (``name`` may hold a folder), sorted by path."""
        depth = len(Path(name).parts)
        found = []
        for f in sorted((self.root / "cells").glob(f"*/seed*/{name}")):
            seed_dir = f.parents[depth - 1]
            found.append((seed_dir.parent.name, int(seed_dir.name.removeprefix("seed")), f))
        return found

    def final_checkpoint(self, cell: str, seed: int, max_steps: int) -> Path | None:
        """The cell's latest checkpoint if its training reached ``max_steps``, else None."""
        from probe_lens.training import latest_checkpoint

        root = self.cell_dir(cell, seed) / "train" / "checkpoints"
        ckpt = latest_checkpoint(root) if root.exists() else None
        if ckpt is None:
            return None
        state = json.loads((ckpt / "state.json").read_text())
        return ckpt if int(state.get("step", -1)) >= max_steps else None  # else: unfinished, `train` resumes it

    def check_space(self, model, train_configs: list[Any]) -> None:
        """Stop before training when the disk cannot hold the largest checkpoint of ``train_configs``."""
        from probe_lens._disk import check_free_disk, checkpoint_bytes
        from probe_lens.training.trainer import select_trainable

        need = 0
        for tc in train_configs:
            names = select_trainable(model, tc.trainable)
            per_checkpoint = checkpoint_bytes(model, names, with_optimizer=True, params=tc.checkpoint_params)
            need = max(need, per_checkpoint * (tc.keep_checkpoints + 1))
        if need:
            check_free_disk(self.root, need, "the training checkpoints of one cell (kept until it is evaluated)")

    # ---- identity ----------------------------------------------------------------------
    def prepare(
        self, config: Any, behaviour_record: dict[str, Any], *, resume: bool, overwrite: bool, lock: bool = True
    ) -> None:
        """Make the folder hold ``config``'s study: refuse another study (or a finished one without
        ``resume``) unless ``overwrite``, then write ``study.json`` and ``behaviour.json``.

        ``lock``: take the writer lock first (a reader passes False: it writes nothing when the folder
        already holds this study). ``overwrite`` of another study is two-phase (:meth:`_replace`).
        """
        held_before = self.root.resolve() in _HELD
        try:
            self._prepare(config, behaviour_record, resume=resume, overwrite=overwrite, lock=lock)
        except BaseException:
            if not held_before:  # a refused open leaves no lock behind (a notebook process lives on)
                unlock_folder(self.root)
            raise

    def _prepare(
        self, config: Any, behaviour_record: dict[str, Any], *, resume: bool, overwrite: bool, lock: bool
    ) -> None:
        self._warn_leftovers()
        spec, wanted = self.study_json, config.to_dict()
        if lock and self.root.is_dir():
            lock_folder(self.root)
        if spec.exists():
            saved = self._saved_study(overwrite)
            changes = study_changes(saved, wanted) if saved is not None else {"invalidating": ["study.json"]}
            if changes["invalidating"]:
                if not overwrite:
                    raise StudyFolderError(
                        f"{self.root} holds a different study (differs in: {', '.join(changes['invalidating'])}): "
                        "its finished cells would not be comparable. Only more seeds or more cells extend a study "
                        "(with --resume). Choose another --out to write the new study beside it, or pass "
                        "--overwrite to delete it."
                    )
                if not lock:
                    lock_folder(self.root)  # deleting is writing
                self._replace(config, behaviour_record)
                return
            if changes["additive"] and not resume:
                raise StudyFolderError(
                    f"{self.root} holds this study with fewer {' and '.join(changes['additive'])}; pass --resume "
                    "to extend it (finished cells are kept, only the new ones run)"
                )
            elif changes["additive"]:
                log.info("extending the study in %s (more %s)", self.root, " and ".join(changes["additive"]))
            elif not resume and any((self.root / "cells").glob("*/*/eval.json")):
                raise StudyFolderError(
                    f"{self.root} already holds (part of) this study; pass --resume to continue it "
                    "(finished cells are kept) or --overwrite to start again"
                )
            if not lock:
                return  # a reader: the folder holds this study already
        if lock:
            lock_folder(self.root)
        self._write_identity(config, behaviour_record)

    def _write_identity(self, config: Any, behaviour_record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config.save(self.study_json)
        write_json(self.root / "behaviour.json", behaviour_record)

    def _replace(self, config: Any, behaviour_record: dict[str, Any]) -> None:
        """``--overwrite``: rename the old folder aside (atomic), start the new study in a fresh folder, and
        delete the old one only once the new ``study.json`` is written; on any failure before that, the old
        folder is put back. A process killed in between leaves it whole at ``<out>.old-<time>`` (named in
        a warning on the next run)."""
        aside = self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        old_fd = _HELD.pop(self.root.resolve(), None)  # our lock on the old folder moves aside with it
        os.rename(self.root, aside)
        log.warning(
            "--overwrite: moved the previous study in %s aside to %s; it is deleted once the new study.json is "
            "written (if this run is stopped before that, it stays there: `mv %s %s` puts it back)",
            self.root, aside, aside, self.root,
        )  # fmt: skip
        try:
            lock_folder(self.root)
            self._write_identity(config, behaviour_record)
        except BaseException:
            unlock_folder(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            os.rename(aside, self.root)
            if old_fd is not None:
                _HELD[self.root.resolve()] = old_fd
            log.warning("--overwrite failed before the new study was written; %s is back in place", self.root)
            raise
        if old_fd is not None:
            _release(old_fd)
        shutil.rmtree(aside)

    def _warn_leftovers(self) -> None:
        """Name an old study an interrupted ``--overwrite`` left beside this folder."""
        for old in sorted(self.root.parent.glob(f"{self.root.name}.old-*")) if self.root.parent.is_dir() else []:
            log.warning(
                "%s holds the study an interrupted --overwrite of %s moved aside; move it back (`mv %s %s`) "
                "or delete it", old, self.root, old, self.root,
            )  # fmt: skip

    def _saved_study(self, overwrite: bool) -> dict[str, Any] | None:
        """The saved ``study.json``; None when it is corrupt and ``overwrite`` (else a :class:`StudyFolderError`)."""
        spec = self.study_json
        try:
            saved = json.loads(spec.read_text())
            if not isinstance(saved, dict):
                raise ValueError(f"it holds a JSON {type(saved).__name__}, not a study")
            return saved
        except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
            if not overwrite:
                raise StudyFolderError(
                    f"{spec} is corrupt ({type(e).__name__}: {e}), so which study {self.root} holds is unknown. "
                    f"If it is this study, delete {spec} and run again with --resume (finished cells are kept); "
                    "or pass --overwrite to delete the folder and start again"
                ) from e
            return None  # --overwrite: start again


GROWABLE = ("seeds", "cells")
"""Study keys a finished study may grow along: a superset of its seeds or cells adds work, changes none."""


def _dotted(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_dotted(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _grows(saved: Any, wanted: Any) -> bool:
    """``wanted`` keeps every entry of ``saved`` (a list of seeds or cell specs) and adds some."""
    if not isinstance(saved, list) or not isinstance(wanted, list):
        return False
    return all(x in wanted for x in saved) and len(wanted) > len(saved)


def study_changes(saved: dict[str, Any], wanted: dict[str, Any]) -> dict[str, list[str]]:
    """How the study ``wanted`` differs from the ``saved`` one (both ``StudyConfig.to_dict()``).

    ``additive``: the :data:`GROWABLE` keys that only grow (more seeds, more cells: the finished work stays
    valid); ``invalidating``: every other differing key, dotted (``probes.layer``, ``model``), and a growable
    key that drops or changes an entry. Keys that do not change results (device, primary contrasts) are
    ignored."""
    a, b = _comparable(saved), _comparable(wanted)
    additive = [k for k in GROWABLE if a.get(k) != b.get(k) and _grows(a.get(k), b.get(k))]
    for k in additive:
        a.pop(k, None), b.pop(k, None)
    flat_a, flat_b = _dotted(a), _dotted(b)
    invalidating = sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k, _MISSING) != flat_b.get(k, _MISSING))
    return {"additive": additive, "invalidating": invalidating}


_MISSING = object()


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """Parts of a study config that change results (device and progress do not). A study file written
    before behaviours (no ``behaviour`` key) is a toxicity study."""
    from probe_lens.experiments.config import EvalSetup

    d = copy.deepcopy(d)
    d.pop("device", None)
    d.pop("primary_contrasts", None)  # which contrasts are primary changes the headline's reading, not results
    d.pop("launch", None)  # where and how the tasks ran, not what they compute
    if isinstance(d.get("eval"), dict):  # a study written before an eval setting was added: its default
        d["eval"] = {**{k: v for k, v in vars(EvalSetup()).items() if k != "threshold"}, **d["eval"]}
    if isinstance(d.get("probes"), dict):  # a study written before token probes were tracked tracked none
        d["probes"].setdefault("token_probes", [])
    d.setdefault("behaviour", DEFAULT_BEHAVIOUR)
    if d.get("behaviour_file") is None:
        d.pop("behaviour_file", None)
    return d


# ---- files -----------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default)))


def read_json(path: Path) -> Any:
    """A run-folder JSON file the study cannot rebuild by itself; a corrupt one raises a
    :class:`StudyFolderError` naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        root = path.parents[3] if len(path.parents) > 3 and path.parents[2].name == "cells" else None
        hint = (  # `report` and `evaluate` cannot rerun a cell: the study goes on where cells are trained
            f" Delete it and continue the study (probe-lens reproduce --out {root} --resume, or train --out {root}): "
            "that cell is run again"
            if path.name == "eval.json" and root is not None
            else ""
        )
        raise StudyFolderError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}).{hint}") from e


def read_derived_json(path: Path) -> Any | None:
    """A file the study derives and can rebuild (split, noise floor, scores): its JSON, or None when it
    is missing or unreadable (e.g. truncated by a full disk), named in a warning, so it is rebuilt."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        log.warning("%s is corrupt (%s: %s); rebuilding it", path, type(e).__name__, e)
        return None


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_generation(folder: Path, gen: Generation) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "generation.safetensors", lambda p: save_file(gen.state_dict(), str(p)))
    write_json(
        folder / "generation.json",
        {"prompts": gen.prompts, "response_texts": gen.response_texts, "prompt_len": gen.prompt_len},
    )


def load_generation(folder: Path) -> Generation:
    t = load_file(str(folder / "generation.safetensors"))
    meta = json.loads((folder / "generation.json").read_text())
    return Generation(
        meta["prompts"],
        t["tokens"],
        t["attention_mask"],
        t["response_mask"],
        int(meta["prompt_len"]),
        meta["response_texts"],
    )
