"""Issue 26, row 16: every way a probe folder can be broken gives one error type, naming the file and field."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from probe_lens._io import sha256_file
from probe_lens.probes import LogisticProbe, ProbeFileError, load_probe, save_probe


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = (X[:, 0] > 0).astype(int)
    return save_probe(LogisticProbe(C=1.0).fit(X, y), tmp_path / "p")


def _edit_record(folder, edit):
    f = folder / "probe.json"
    rec = json.loads(f.read_text())
    rec = edit(rec)
    f.write_text(json.dumps(rec))


def _edit_tensors(folder, edit):
    """Change the tensors and recompute the checksum, as a careful forger would."""
    f = folder / "tensors.safetensors"
    t = load_file(str(f))
    edit(f, t)
    _edit_record(folder, lambda r: {**r, "tensors_sha256": sha256_file(f)})


def _set_params(**kw):
    return lambda r: {**r, "params": {**r["params"], **kw}}


CASES = {
    "a JSON list": (lambda p: (p / "probe.json").write_text("[1, 2]"), "JSON list"),
    "format_version a string": (lambda p: _edit_record(p, lambda r: {**r, "format_version": "abc"}), "format_version"),
    "a swapped class": (lambda p: _edit_record(p, lambda r: {**r, "class": "DiverseProbeEnsemble"}), "DiverseProbeEnsemble"),
    "an unknown class": (lambda p: _edit_record(p, lambda r: {**r, "class": "os.system"}), "not a registered probe class"),
    "an unknown param": (lambda p: _edit_record(p, _set_params(banana=3)), "banana"),
    "C = -5": (lambda p: _edit_record(p, _set_params(C=-5)), "C must be"),
    "NaN coefficients": (
        lambda p: _edit_tensors(p, lambda f, t: save_file({k: np.full_like(v, np.nan) for k, v in t.items()}, str(f))),
        "NaN",
    ),
    "a truncated tensor file (checksum recomputed)": (
        lambda p: _edit_tensors(p, lambda f, t: f.write_bytes(f.read_bytes()[:-17])),
        "tensors.safetensors",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_probe_file_is_one_error_naming_it(saved, case):
    breaks, words = CASES[case]
    breaks(saved)
    with pytest.raises(ProbeFileError) as e:
        load_probe(saved)
    assert str(saved) in str(e.value) and words in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)  # the CLI's user errors (exit 2)


def test_the_unbroken_probe_still_loads(saved):
    assert isinstance(load_probe(saved), LogisticProbe)
