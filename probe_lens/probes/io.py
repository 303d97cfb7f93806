"""Save and load probes without pickle: a folder holding ``tensors.safetensors`` + ``probe.json``.

Layout of ``save_probe(probe, "my_probe")``::

    my_probe/
        probe.json             class name, constructor params, fitted scalars, ProbeMetadata,
                               format version, sha256 of the tensors file
        tensors.safetensors    float arrays (coef_raw, bias, direction, mean, scale, ...);
                               ensembles prefix each member's arrays with "members.{i}."

The folder is written next to its destination and renamed into place, so readers never see a
half-written probe. Loading builds objects only from a fixed registry of probe classes and plain
JSON values; nothing is unpickled or imported by name from the file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from probe_lens._common import resid_post_hook
from probe_lens._io import sha256_file
from probe_lens._registry import Registry
from probe_lens.probes.attention import AttentionProbe
from probe_lens.probes.base import Probe, ProbeMetadata, library_version
from probe_lens.probes.ensemble import DiverseProbeEnsemble
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe
from probe_lens.probes.max_pooled import MaxPooledLogisticProbe

FORMAT = "probe_lens.probe"
FORMAT_VERSION = 1
JSON_NAME = "probe.json"
TENSORS_NAME = "tensors.safetensors"

PROBE_CLASSES: Registry[type[Probe]] = Registry(
    "probe class", hint="Register custom classes with probe_lens.probes.register_probe_class."
)
"""The probe classes ``load_probe`` can rebuild, by class name (add with :func:`register_probe_class`)."""


def register_probe_class(cls: type, *, replace: bool = False) -> type:
    """Allow ``load_probe`` to rebuild a user-defined probe class (usable as a decorator).

    Any ``Probe`` subclass qualifies: single probes (``BaseProbe`` subclasses implementing
    ``_fit_raw``) and ensembles alike. Registered classes are also run through scikit-learn's
    estimator checks by the test suite (``probe_classes``): a class whose constructor needs
    arguments overrides ``_test_instances``. Another class under a registered name needs ``replace=True``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(
            f"only probe classes (subclasses of probe_lens.probes.Probe, e.g. of BaseProbe) can be "
            f"registered, got {cls!r}"
        )
    return PROBE_CLASSES.register(cls.__name__, cls, replace=replace)


for _cls in (LogisticProbe, MassMeanProbe, DiverseProbeEnsemble, MaxPooledLogisticProbe, AttentionProbe):
    register_probe_class(_cls)


def probe_classes() -> dict[str, type[Probe]]:
    """``{class name: class}`` of every probe class ``load_probe`` can rebuild (built-in + registered)."""
    return dict(PROBE_CLASSES.items())


# ---- encoding ---------------------------------------------------------------------------------


def _decode_params(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and "__probe__" in value:
            out[key] = PROBE_CLASSES.get(value["__probe__"])(**_decode_params(value["params"]))
        elif isinstance(value, list):
            out[key] = tuple(value)  # sequences are saved as JSON lists; params hold tuples
        else:
            out[key] = value
    return out


def _encode(probe: Probe) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not isinstance(probe, Probe):
        raise TypeError(f"save_probe expects a fitted probe or ensemble, got {type(probe).__name__}")
    tensors: dict[str, np.ndarray] = {}
    record = probe._to_record("", tensors)
    record["metadata"] = probe.metadata.to_dict()
    return record, tensors


# ---- public API -------------------------------------------------------------------------------


def save_probe(probe: Probe, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``probe`` (any probe type, fitted) to the folder ``path`` atomically; returns the path.

    An existing probe folder at ``path`` is refused unless ``overwrite=True`` (then it is replaced); any
    other existing file or non-empty folder is always refused, so a typo cannot delete unrelated data.
    """
    path = Path(path)
    record, tensors = _encode(probe)
    if path.exists():
        is_probe_dir = path.is_dir() and (path / JSON_NAME).is_file()
        is_empty_dir = path.is_dir() and not any(path.iterdir())
        if not (is_probe_dir or is_empty_dir):
            raise FileExistsError(f"{path} exists and is not a probe folder; choose another path or remove it.")
        if is_probe_dir and not overwrite:
            raise FileExistsError(f"{path} already holds a probe; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / TENSORS_NAME), metadata={"format": FORMAT})
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "saved_by": library_version(),
            "tensors_sha256": sha256_file(tmp / TENSORS_NAME),
            **record,
        }
        with open(tmp / JSON_NAME, "w") as f:
            json.dump(record, f, indent=2, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            trash = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_probe(
    path: str | os.PathLike,
    *,
    expect_d_model: int | None = None,
    expect_hook: str | int | None = None,
    model: Any = None,
) -> Probe:
    """Load a probe saved by ``save_probe`` and check it fits where it will be used.

    Args:
        path: the probe folder.
        expect_d_model: refuse (ValueError) a probe fit on another activation width.
        expect_hook: refuse a probe recorded for another hook (an int L means
            ``"blocks.{L}.hook_resid_post"``). A probe without a recorded hook only warns.
        model: a HookedTransformer: its ``cfg.d_model`` is checked, and the probe's hook (or
            ``expect_hook``) must exist in ``model.hook_dict``. A different ``cfg.model_name``
            only warns (fine-tuned copies keep the base name).
    """
    path = Path(path)
    json_path = path / JSON_NAME
    if not json_path.is_file():
        hint = " (pass the folder, not a file inside it)" if path.name in (JSON_NAME, TENSORS_NAME) else ""
        raise FileNotFoundError(f"no probe at {path}: expected {json_path}{hint}")
    record = _read_record(json_path)
    tensors_path = path / TENSORS_NAME
    if not tensors_path.is_file():
        raise ProbeFileError(f"{tensors_path} is missing: the probe folder is incomplete; save or fit the probe again")
    if sha256_file(tensors_path) != record.get("tensors_sha256"):
        raise ProbeFileError(f"{tensors_path} does not match the checksum in {json_path}: corrupted file")
    try:
        tensors = load_file(str(tensors_path))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError, ValueError) on a bad file
        raise ProbeFileError(f"{tensors_path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    for name, t in tensors.items():
        if np.issubdtype(t.dtype, np.floating) and not np.isfinite(t).all():
            raise ProbeFileError(f"{tensors_path}: tensor {name!r} holds NaN or infinite values; fit the probe again")
    try:
        with np.errstate(all="raise"):
            probe = _decode(record, tensors)
        check = getattr(probe, "_check_params", None)
        if check is not None:
            check()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, FloatingPointError) as e:
        raise ProbeFileError(
            f"{json_path}: cannot build a {record.get('class')!r} probe from it ({type(e).__name__}: {e}); "
            "the file was edited or is corrupt: save or fit the probe again"
        ) from e
    _check_compatible(probe, path, expect_d_model=expect_d_model, expect_hook=expect_hook, model=model)
    return probe


class ProbeFileError(ValueError):
    """A probe folder that cannot be loaded: the message names the file and the field."""


def _read_record(json_path: Path) -> dict[str, Any]:
    """``probe.json`` as a mapping of a supported format (errors: :class:`ProbeFileError` naming the field)."""
    try:
        with open(json_path) as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProbeFileError(
            f"{json_path} is not valid JSON ({e}): the probe file is truncated or corrupt; save or fit the probe again"
        ) from e
    if not isinstance(record, dict):
        raise ProbeFileError(f"{json_path} holds a JSON {type(record).__name__}, not a probe record (a mapping)")
    if record.get("format") != FORMAT:
        raise ProbeFileError(f"{json_path} is not a probe_lens probe file (format={record.get('format')!r})")
    version = record.get("format_version", 1)
    if type(version) is not int:
        raise ProbeFileError(f"{json_path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ProbeFileError(
            f"{json_path} uses probe format v{version}, newer than this probe_lens (v{FORMAT_VERSION}); upgrade probe_lens."
        )
    if not isinstance(record.get("class"), str) or record["class"] not in PROBE_CLASSES:
        raise ProbeFileError(
            f"{json_path}: class {record.get('class')!r} is not a registered probe class "
            f"({', '.join(PROBE_CLASSES)}); register it before loading"
        )
    return record


def _decode(record: dict[str, Any], tensors: dict[str, np.ndarray]) -> Probe:
    cls = PROBE_CLASSES.get(record["class"])
    meta = record.get("metadata", {})
    probe = cls._from_record(record, tensors, "", resolve=PROBE_CLASSES.get, decode_params=_decode_params)
    if meta.get("d_model") is not None and meta["d_model"] != probe.n_features_in_:
        raise ValueError(
            f"probe file is inconsistent: metadata d_model={meta['d_model']} but tensors have {probe.n_features_in_}"
        )
    return probe


def _resolve_hook_name(hook: str | int) -> str:
    if isinstance(hook, (int, np.integer)) and not isinstance(hook, bool):
        return resid_post_hook(int(hook))
    if isinstance(hook, str):
        return hook
    raise TypeError(f"expect_hook must be a hook name or a layer index, got {hook!r}")


def _check_compatible(
    probe: Probe,
    path: Path,
    *,
    expect_d_model: int | None,
    expect_hook: str | int | None,
    model: Any,
) -> None:
    meta: ProbeMetadata = probe.metadata
    desc = f"probe at {path} (model {meta.model_name!r}, hook {meta.hook!r}, d_model={meta.d_model})"
    if model is not None:
        cfg = getattr(model, "cfg", None)
        if cfg is None or not hasattr(cfg, "d_model"):
            raise TypeError("model must be a HookedTransformer (with .cfg.d_model)")
        if expect_d_model is not None and expect_d_model != cfg.d_model:
            raise ValueError(f"expect_d_model={expect_d_model} contradicts model.cfg.d_model={cfg.d_model}")
        expect_d_model = cfg.d_model
        if meta.model_name and getattr(cfg, "model_name", None) and cfg.model_name != meta.model_name:
            warnings.warn(
                f"{desc} was fit on model {meta.model_name!r}, loading it for {cfg.model_name!r}",
                UserWarning,
                stacklevel=3,
            )
    if expect_d_model is not None and int(expect_d_model) != probe.n_features_in_:
        raise ValueError(
            f"{desc} cannot be used here: it was fit on d_model={probe.n_features_in_} "
            f"activations but the target has d_model={int(expect_d_model)}. Load a probe fit on "
            "this model, or refit one (LogisticProbe().fit(acts, y))."
        )
    if expect_hook is not None:
        wanted = _resolve_hook_name(expect_hook)
        if meta.hook is None:
            warnings.warn(
                f"{desc} has no recorded hook; cannot check it matches {wanted!r}. Record it with "
                "probe.set_metadata(hook=...) before saving.",
                UserWarning,
                stacklevel=3,
            )
        elif meta.hook != wanted:
            raise ValueError(
                f"{desc} reads hook {meta.hook!r} but {wanted!r} was requested. Load the probe "
                "for that hook, or pass expect_hook=None to skip the check."
            )
    hook_to_check = _resolve_hook_name(expect_hook) if expect_hook is not None else meta.hook
    if model is not None and hook_to_check is not None:
        hook_dict = getattr(model, "hook_dict", None)
        if hook_dict is not None and hook_to_check not in hook_dict:
            layers = getattr(model.cfg, "n_layers", "?")
            raise ValueError(f"{desc}: hook {hook_to_check!r} does not exist in this model ({layers} layers).")
