"""Training checkpoints as safetensors + JSON (no pickle), written atomically.

Layout under ``out_dir/checkpoints/``::

    step_000020/model.safetensors      parameters (trainable ones, or all)
    step_000020/optimizer.safetensors  AdamW moments, keyed "state.<param index>.<name>"
    step_000020/extra.safetensors      RNG states and run tensors (e.g. reference log-probs)
    step_000020/state.json             step, optimizer param groups, scheduler, metadata
    latest.json                        {"step": 20, "dir": "step_000020"}  (written last)

A checkpoint folder is assembled in a temporary folder and renamed into place, and ``latest.json``
is replaced atomically after it, so a crash at any moment leaves the previous good checkpoint.
:func:`latest_checkpoint` checks the folder it finds (readable ``state.json``, complete safetensors
files) and falls back, with a warning, to the newest older checkpoint that is whole.
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

from probe_lens.training._io import atomic_write_text

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _step_number(name: str) -> int:
    """The step of a ``step_<n>`` folder name."""
    m = _STEP_DIR.match(name)
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
    name = f"step_{step:06d}"
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
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=_json_default))
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


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint's JSON")


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``step_*`` folder under ``root``, oldest first."""
    out = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
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

    Raises :class:`CheckpointError` naming the bad file. Reads headers only, not the tensors.
    """
    path = Path(path)
    state = read_state(path)
    files = ["model.safetensors", "extra.safetensors"] + (["optimizer.safetensors"] if "optimizer" in state else [])
    for name in files:
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing; delete {path}")
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f} is corrupt or truncated ({e}); delete {path}") from e
    return state


def latest_checkpoint(root: str | Path) -> Path | None:
    """Folder of the last whole checkpoint under ``root`` (None if there is none).

    ``latest.json`` names it; if that file or the folder it names is missing, unreadable or corrupt,
    the newest older whole checkpoint is used instead, with a warning. Raises
    :class:`CheckpointError` when there are checkpoint folders but none is usable.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    pointer = root / "latest.json"
    problems: list[str] = []
    named: Path | None = None
    if pointer.exists():
        try:
            named = root / str(json.loads(pointer.read_text())["dir"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            problems.append(f"{pointer} is unreadable ({type(e).__name__}: {e})")
    candidates = ([named] if named is not None else []) + [p for _, p in reversed(_step_dirs(root)) if p != named]
    if named is not None and not named.is_dir():
        problems.append(f"{pointer} points at {named}, which is missing")
        candidates = candidates[1:]
    if named is not None:  # never go past the checkpoint latest.json names (later folders are unfinished runs')
        limit = _STEP_DIR.match(named.name)
        if limit:
            candidates = [p for p in candidates if _step_number(p.name) <= int(limit.group(1))]
    for cand in candidates:
        try:
            verify_checkpoint(cand)
        except CheckpointVersionError:
            raise
        except CheckpointError as e:
            problems.append(str(e))
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


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder into ``model`` (and optimizer/scheduler/RNG); returns its state dict.

    The returned dict has ``"step"``, ``"metadata"`` and ``"extra"`` (the run tensors). A checkpoint
    of another model (name or shape), a corrupt one or one from a newer probe_lens raises
    :class:`CheckpointError` and leaves ``model`` untouched. A checkpoint without optimizer state
    (a finished run's final one) loads the weights and leaves ``optimizer`` as it is; check
    ``"optimizer" in state``.
    """
    path = Path(path)
    state = verify_checkpoint(path)
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
