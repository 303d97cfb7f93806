"""Training checkpoints as safetensors + JSON (no pickle), written atomically.

Layout under ``out_dir/checkpoints/``::

    step_000020/model.safetensors      parameters (trainable ones, or all)
    step_000020/optimizer.safetensors  AdamW moments, keyed "state.<param index>.<name>"
    step_000020/extra.safetensors      RNG states and run tensors (e.g. reference log-probs)
    step_000020/state.json             step, optimizer param groups, scheduler, metadata
    step_000020/manifest.json          {"sha256": {file name: hex digest}} of every file above
    latest.json                        {"step": 20, "dir": "step_000020"}  (written last)

A checkpoint folder is assembled in a temporary folder (manifest last) and renamed into place, and
``latest.json`` is replaced atomically after it, so a crash at any moment leaves the previous good
checkpoint. :func:`latest_checkpoint` checks the folder it finds (readable ``state.json``, complete
safetensors files, every file's sha256 as in the manifest) and falls back, with a warning naming what
is wrong, to the newest older checkpoint that is whole. It loads only ``step_<n>`` folders that
resolve (symlinks followed) directly inside the checkpoint root: a ``latest.json`` naming anything
else is ignored with a warning, as an unreadable one is. Folders written before checkpoints carried
checksums (no manifest) load unverified, with a warning once per folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from probe_lens._io import sha256_file
from probe_lens.training._io import atomic_write_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"step_([0-9]+)")  # used with fullmatch


def step_folder_name(step: int) -> str:
    """The checkpoint folder of ``step`` under the checkpoint root (``step_000020``)."""
    return f"step_{int(step):06d}"


_warned_unverified: set[Path] = set()


def _step_number(name: str) -> int:
    """The step of a ``step_<n>`` folder name."""
    m = _STEP_DIR.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is no step_<n> checkpoint folder")
    return int(m.group(1))


class CheckpointError(ValueError):
    """A checkpoint cannot be used: corrupt, from a newer probe_lens, or from another model."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint written by a newer probe_lens (never skipped over: upgrade instead)."""


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    params: str = "trainable",
    extra_tensors: dict[str, torch.Tensor] | None = None,
    metadata: dict[str, Any] | None = None,
    keep: int = 1,
) -> Path:
    """Write a checkpoint for ``step`` under ``root`` and return its folder; keeps the last ``keep``.

    ``optimizer=None`` writes no optimizer state (enough to evaluate the weights; a resume from it
    restarts AdamW). The model's name and shape are recorded and checked by :func:`load_checkpoint`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = step_folder_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        named = {n: p for n, p in model.named_parameters() if params == "all" or p.requires_grad}
        save_file({n: p.detach().cpu().contiguous() for n, p in named.items()}, str(tmp / "model.safetensors"))
        state: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "params": params,
            "model": model_identity(model),
        }
        if optimizer is not None:
            opt_tensors, opt_json = _optimizer_tensors(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            state["optimizer"] = opt_json
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        extra = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # this process's device only (get_rng_state_all would open a context on every visible GPU)
            extra["rng.cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
        for k, v in (extra_tensors or {}).items():
            extra[k] = v.detach().cpu().contiguous()
        save_file(extra, str(tmp / "extra.safetensors"))
        state["metadata"] = metadata or {}
        state["checksums"] = MANIFEST
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=_json_default))
        _write_manifest(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest.json", json.dumps({"step": int(step), "dir": name}))
    _prune(root, keep, current=name)
    return final


def _write_manifest(folder: Path) -> None:
    """Record the sha256 of every file in ``folder`` in its manifest (before the rename into place)."""
    sums = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"sha256": sums}, indent=2))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint's JSON")


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``step_*`` folder under ``root``, oldest first."""
    out = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return sorted(out)


def _prune(root: Path, keep: int, current: str) -> None:
    """Keep the newest ``keep`` checkpoints up to ``current``; drop later ones (an abandoned run's)
    and temporary folders left by an interrupted write (one writer per ``root``)."""
    cur = _step_number(current)
    older = [p for s, p in _step_dirs(root) if s <= cur and p.name != current]
    drop = older[: max(0, len(older) - (keep - 1))]
    drop += [p for s, p in _step_dirs(root) if s > cur]
    drop += [p for p in root.glob(".step_*") if p.is_dir()]
    for old in drop:
        shutil.rmtree(old, ignore_errors=True)


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    """What a checkpoint records about its model: name and shape (``cfg`` of a HookedTransformer)."""
    cfg = getattr(model, "cfg", None)
    keys = ("model_name", "n_layers", "d_model", "d_vocab")
    return {k: getattr(cfg, k) for k in keys if cfg is not None and isinstance(getattr(cfg, k, None), (str, int))}


def read_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint folder's ``state.json``, checked: readable and of a format this version reads."""
    path = Path(path)
    f = path / "state.json"
    if not f.is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no state.json)")
    try:
        state = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}): the checkpoint is corrupt; delete {path}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{f} is not a checkpoint state (a JSON object); delete {path}")
    version = state.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path} was written by a newer probe_lens (checkpoint format {version}; this version reads "
            f"{FORMAT_VERSION}); upgrade probe_lens to load it"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not {FORMAT_VERSION}; it cannot be read")
    return state


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint folder is whole (state.json, complete safetensors files); returns its state.

    Every file's sha256 is compared with the manifest's; a folder without a manifest (written before
    checkpoints carried checksums) is accepted unverified, with a warning once per folder. Raises
    :class:`CheckpointError` naming the bad file.
    """
    path = Path(path)
    state = read_state(path)
    files = ["model.safetensors", "extra.safetensors"] + (["optimizer.safetensors"] if "optimizer" in state else [])
    _check_headers(path, files)
    _check_checksums(path, state, ["state.json", *files])
    return state


def _check_headers(path: Path, files: list[str]) -> None:
    """Each safetensors file exists and has a readable header."""
    for name in files:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing; delete {path}")
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is corrupt or truncated ({e}); delete {path}") from e


def _check_checksums(path: Path, state: dict[str, Any], required: list[str]) -> None:
    """Each file the manifest lists, and each of ``required``, has the sha256 the manifest records."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        if "checksums" in state:
            raise CheckpointError(f"{path} is incomplete: {MANIFEST} (its files' sha256) is missing; delete {path}")
        _warn_unverified(path)
        return
    sums = _read_manifest(manifest)
    for name in sorted(set(required) | set(sums)):
        f = path / name
        if name not in sums:
            raise CheckpointError(f"{manifest} records no sha256 for {name}: the checkpoint is corrupt; delete {path}")
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing; delete {path}")
        if sha256_file(f) != sums[name]:
            raise CheckpointError(
                f"{f} is corrupt: its sha256 differs from the one {MANIFEST} recorded when the checkpoint "
                f"was written; delete {path}"
            )


def _read_manifest(manifest: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a checkpoint's manifest, checked to name plain files of its folder."""
    try:
        sums = json.loads(manifest.read_text())["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest} is unreadable ({type(e).__name__}: {e}); delete {manifest.parent}") from e
    plain = isinstance(sums, dict) and all(
        isinstance(k, str) and isinstance(v, str) and Path(k).name == k and k not in (".", "..", MANIFEST)
        for k, v in sums.items()
    )
    if not plain:
        raise CheckpointError(f"{manifest} is not a map of file names to sha256; delete {manifest.parent}")
    return sums


def _warn_unverified(path: Path) -> None:
    key = path.resolve()
    if key not in _warned_unverified:
        _warned_unverified.add(key)
        warnings.warn(
            f"{path} has no {MANIFEST} (written by a probe_lens before checkpoints carried sha256 checksums): "
            "its files are loaded unverified",
            RuntimeWarning,
            stacklevel=4,
        )


def latest_checkpoint(root: str | Path) -> Path | None:
    """Folder of the last whole checkpoint under ``root`` (None if there is none).

    ``latest.json`` names it; if that file is unreadable, names anything but a ``step_<n>`` folder
    inside ``root`` (symlinks resolved), or the folder it names is missing or corrupt (a sha256
    mismatch included), the newest older whole checkpoint is used instead, with a warning naming
    what is wrong. Raises :class:`CheckpointError` when there are checkpoint folders but none is usable.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    problems: list[str] = []
    for cand in _candidates(root, problems):
        problem = _outside(root, cand)
        if problem is None:
            try:
                verify_checkpoint(cand)
            except CheckpointVersionError:
                raise
            except CheckpointError as e:
                problem = str(e)
        if problem is not None:
            problems.append(problem)
            continue
        if problems:
            warnings.warn(
                f"{'; '.join(problems)}; using the previous good checkpoint {cand}", RuntimeWarning, stacklevel=2
            )
        return cand
    if problems:
        raise CheckpointError(
            f"no usable checkpoint under {root}: {'; '.join(problems)}. Delete {root} to start the run again"
        )
    return None


def _candidates(root: Path, problems: list[str]) -> list[Path]:
    """Checkpoint folders to try, newest first: the one ``latest.json`` names, then older ones.

    Never past the folder ``latest.json`` names (later folders are an unfinished run's); when it names
    none usable, every ``step_<n>`` folder, with the reason added to ``problems``.
    """
    newest_first = [p for _, p in reversed(_step_dirs(root))]
    named = _pointer_target(root, problems)
    if named is None:
        return newest_first
    older = [p for p in newest_first if p != named and _step_number(p.name) <= _step_number(named.name)]
    if not named.is_dir():
        problems.append(f"{root / 'latest.json'} points at {named}, which is missing")
        return older
    return [named, *older]


def _pointer_target(root: Path, problems: list[str]) -> Path | None:
    """The ``step_<n>`` folder ``latest.json`` names (None if it is absent, or unusable: see ``problems``)."""
    pointer = root / "latest.json"
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        problems.append(f"{pointer} is unreadable ({type(e).__name__}: {e})")
        return None
    if not (isinstance(name, str) and _STEP_DIR.fullmatch(name)):
        problems.append(f"{pointer} names {name!r}, not a step_<n> folder inside {root}; it is ignored")
        return None
    return root / name


def _outside(root: Path, folder: Path) -> str | None:
    """Why ``folder`` may not be loaded from ``root`` (it resolves outside it), or None."""
    real = folder.resolve()
    if real.parent != root.resolve():
        return f"{folder} resolves to {real}, outside {root}; it is never loaded from there"
    return None


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    restore_rng: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder into ``model`` (and optimizer/scheduler/RNG); returns its state dict.

    ``verify=False`` skips re-hashing the files, for a folder :func:`latest_checkpoint` has just verified.

    The returned dict has ``"step"``, ``"metadata"`` and ``"extra"`` (the run tensors). A checkpoint
    of another model (name or shape), a corrupt one or one from a newer probe_lens raises
    :class:`CheckpointError` and leaves ``model`` untouched. A checkpoint without optimizer state
    (a finished run's final one) loads the weights and leaves ``optimizer`` as it is; check
    ``"optimizer" in state``.
    """
    path = Path(path)
    state = verify_checkpoint(path) if verify else read_state(path)
    saved_id, own_id = state.get("model") or {}, model_identity(model)
    differ = {k: (saved_id[k], own_id[k]) for k in saved_id.keys() & own_id.keys() if saved_id[k] != own_id[k]}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(differ.items()))
        raise CheckpointError(
            f"{path} was saved from another model ({detail}); load it into the model it was trained from"
        )
    weights = _load_tensors(path / "model.safetensors")
    own = dict(model.named_parameters())
    missing = sorted(set(weights) - set(own))
    if missing:
        raise CheckpointError(f"{path}: checkpoint has parameters the model lacks, e.g. {missing[:5]}; wrong model?")
    for n, w in weights.items():
        if own[n].shape != w.shape:
            raise CheckpointError(
                f"{path}: {n} has shape {tuple(w.shape)} in the checkpoint, {tuple(own[n].shape)} in the model; wrong model?"
            )
    with torch.no_grad():
        for n, w in weights.items():
            own[n].copy_(w.to(own[n].device, own[n].dtype))
    if optimizer is not None and "optimizer" in state:
        tensors = _load_tensors(path / "optimizer.safetensors")
        opt_state: dict[int, dict[str, Any]] = {}
        for key, t in tensors.items():
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = t
        for idx, scalars in state["optimizer"]["scalars"].items():
            opt_state.setdefault(int(idx), {}).update(scalars)
        groups = state["optimizer"]["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        try:
            optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: its optimizer state does not fit this run's trainable parameters ({e}); "
                "was it saved with another `trainable` setting?"
            ) from e
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    extra = _load_tensors(path / "extra.safetensors")
    if restore_rng:
        torch.set_rng_state(extra["rng.torch"])
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            dev = torch.cuda.current_device()
            # "rng.cuda.<i>": checkpoints written before one state per process
            cuda = extra.get("rng.cuda", extra.get(f"rng.cuda.{dev}"))
            if cuda is not None:
                torch.cuda.set_rng_state(cuda, dev)
    state["extra"] = {k: v for k, v in extra.items() if not k.startswith("rng.")}
    return state


def _load_tensors(f: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(f))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{f} is corrupt or truncated ({e}); delete {f.parent}") from e
