"""Training checkpoints as safetensors + JSON (no pickle), written atomically.

Layout under ``out_dir/checkpoints/``::

    step_000020/model.safetensors      parameters (trainable ones, or all)
    step_000020/optimizer.safetensors  AdamW moments, keyed "state.<param index>.<name>"
    step_000020/extra.safetensors      RNG states and run tensors (e.g. reference log-probs)
    step_000020/state.json             step, optimizer param groups, scheduler, metadata
    latest.json                        {"step": 20, "dir": "step_000020"}  (written last)

A checkpoint folder is assembled in a temporary folder and renamed into place, and ``latest.json``
is replaced atomically after it, so a crash at any moment leaves the previous good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from probe_lens.training._io import atomic_write_text

FORMAT_VERSION = 1


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
    """Write a checkpoint for ``step`` under ``root`` and return its folder; keeps the last ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        named = {n: p for n, p in model.named_parameters() if params == "all" or p.requires_grad}
        save_file({n: p.detach().cpu().contiguous() for n, p in named.items()}, str(tmp / "model.safetensors"))
        state: dict[str, Any] = {"format_version": FORMAT_VERSION, "step": int(step), "params": params}
        if optimizer is not None:
            opt_tensors, opt_json = _optimizer_tensors(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            state["optimizer"] = opt_json
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        extra = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                extra[f"rng.cuda.{i}"] = s
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


def _prune(root: Path, keep: int, current: str) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.startswith("."))
    for old in steps[:-keep]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """Folder of the last completed checkpoint under ``root`` (None if there is none)."""
    root = Path(root)
    pointer = root / "latest.json"
    if not pointer.exists():
        return None
    d = root / json.loads(pointer.read_text())["dir"]
    if not (d / "state.json").exists():
        raise FileNotFoundError(f"{pointer} points at {d}, which is missing or incomplete")
    return d


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder into ``model`` (and optimizer/scheduler/RNG); returns its state dict.

    The returned dict has ``"step"``, ``"metadata"`` and ``"extra"`` (the run tensors).
    """
    path = Path(path)
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no state.json)")
    state = json.loads((path / "state.json").read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    weights = load_file(str(path / "model.safetensors"))
    own = dict(model.named_parameters())
    missing = sorted(set(weights) - set(own))
    if missing:
        raise ValueError(f"{path}: checkpoint has parameters the model lacks, e.g. {missing[:5]}; wrong model?")
    with torch.no_grad():
        for n, w in weights.items():
            if own[n].shape != w.shape:
                raise ValueError(f"{path}: {n} has shape {tuple(w.shape)} in the checkpoint, {tuple(own[n].shape)} in the model")
            own[n].copy_(w.to(own[n].device, own[n].dtype))
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds no optimizer state")
        tensors = load_file(str(path / "optimizer.safetensors"))
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
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    extra = load_file(str(path / "extra.safetensors"))
    if restore_rng:
        torch.set_rng_state(extra["rng.torch"])
        if torch.cuda.is_available():
            cuda = [extra[k] for k in sorted(k for k in extra if k.startswith("rng.cuda."))]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
    state["extra"] = {k: v for k, v in extra.items() if not k.startswith("rng.")}
    return state
