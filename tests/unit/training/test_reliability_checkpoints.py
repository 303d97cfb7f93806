"""Issue 26, rows 2, 3 and 5: checkpoints outside their folder, silently flipped bits, corrupt metrics lines."""

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from probe_lens.testing import tiny_model
from probe_lens.training import MetricsWriter, load_checkpoint, read_metrics, save_checkpoint
from probe_lens.training._io import MetricsFileError, truncate_metrics
from probe_lens.training.checkpoint import CheckpointError, latest_checkpoint


def _optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.tensor([[1, 5, 9, 13]])).sum().backward()
    opt.step()
    return opt


def _save_two(root, model, opt):
    """Checkpoints at steps 1 and 2 (keep=2) under ``root``; the model changes between them."""
    save_checkpoint(root, 1, model, opt, keep=2)
    with torch.no_grad():
        model.embed.W_E.add_(1.0)
    save_checkpoint(root, 2, model, opt, keep=2)


@pytest.fixture
def two_checkpoints(tmp_path):
    """Checkpoints at steps 1 and 2 of a tiny model; returns (root, model at step 2)."""
    model = tiny_model(seed=0)
    root = tmp_path / "checkpoints"
    _save_two(root, model, _optimizer(model))
    return root, model


def _flip_tensor_bytes(f, n=4):
    """Flip ``n`` bytes at the start of a safetensors file's tensor data, leaving its header intact."""
    raw = bytearray(f.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")  # 8-byte header length, JSON header, then the data
    for i in range(start, start + n):
        raw[i] ^= 0xFF
    f.write_bytes(bytes(raw))


# ------------------------------------------------------------------ row 2: paths outside checkpoints/


@pytest.fixture
def foreign(tmp_path):
    """A whole, valid checkpoint of another run, outside the checkpoint root."""
    model = tiny_model(seed=7)
    save_checkpoint(tmp_path / "foreign", 2, model, _optimizer(model))
    return tmp_path / "foreign" / "step_000002"


@pytest.mark.parametrize("how", ["sibling", "up_to_the_top", "absolute"])
def test_latest_json_pointing_outside_is_never_loaded(two_checkpoints, foreign, how):
    root, model = two_checkpoints
    pointer = {
        "sibling": "../foreign/step_000002",
        "up_to_the_top": "../" * len(root.resolve().parts) + str(foreign.resolve()).lstrip("/"),
        "absolute": str(foreign),
    }[how]
    assert (root / pointer).resolve() == foreign.resolve()  # today's code loads this folder
    (root / "latest.json").write_text(json.dumps({"step": 2, "dir": pointer}))
    with pytest.warns(RuntimeWarning, match=r"latest\.json names .*not a step_<n> folder inside.*step_000002"):
        found = latest_checkpoint(root)
    assert found == root / "step_000002"
    loaded = tiny_model(seed=1)
    load_checkpoint(found, loaded)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))


def test_step_folder_symlinked_outside_is_never_loaded(two_checkpoints, foreign):
    root, _ = two_checkpoints
    os.symlink(foreign, root / "step_000003", target_is_directory=True)
    (root / "latest.json").write_text(json.dumps({"step": 3, "dir": "step_000003"}))
    with pytest.warns(RuntimeWarning, match=r"step_000003 resolves to .*foreign.*outside"):
        assert latest_checkpoint(root) == root / "step_000002"


def test_only_a_foreign_checkpoint_is_a_clear_error(tmp_path, foreign):
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    (root / "latest.json").write_text(json.dumps({"step": 2, "dir": "../../foreign/step_000002"}))
    with pytest.raises(CheckpointError, match=r"no usable checkpoint .*latest\.json names '\.\./\.\./foreign"):
        latest_checkpoint(root)


# ------------------------------------------------------------------ row 3: sha256 of every file


def test_manifest_holds_the_sha256_of_every_file(two_checkpoints):
    root, _ = two_checkpoints
    d = root / "step_000002"
    sums = json.loads((d / "manifest.json").read_text())["sha256"]
    files = {f.name for f in d.iterdir()} - {"manifest.json"}
    assert set(sums) == files == {"model.safetensors", "optimizer.safetensors", "extra.safetensors", "state.json"}
    assert all(sums[n] == hashlib.sha256((d / n).read_bytes()).hexdigest() for n in files)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "extra.safetensors", "state.json"])
def test_silently_flipped_bits_fall_back_to_the_previous_checkpoint(two_checkpoints, name):
    root, _ = two_checkpoints
    f = root / "step_000002" / name
    if name == "state.json":  # still valid JSON, only a number changed
        f.write_text(f.read_text().replace('"step": 2', '"step": 3'))
    else:
        _flip_tensor_bytes(f)
        load_file(str(f))  # the header is intact: only the checksum can tell
    with pytest.raises(CheckpointError, match=rf"{name} is corrupt: its sha256 differs"):
        load_checkpoint(root / "step_000002", tiny_model(seed=0))
    with pytest.warns(RuntimeWarning, match=rf"step_000002/{name} is corrupt.*previous good checkpoint .*step_000001"):
        assert latest_checkpoint(root) == root / "step_000001"


def test_flipped_bits_in_the_only_checkpoint_are_a_clear_error(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, tiny_model(seed=0), None)
    _flip_tensor_bytes(root / "step_000001" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint .*model\.safetensors is corrupt.*Delete"):
        latest_checkpoint(root)


@pytest.mark.parametrize("damage", ["deleted", "unreadable", "names_outside", "lacks_a_file"])
def test_a_damaged_manifest_falls_back(two_checkpoints, damage):
    root, _ = two_checkpoints
    manifest = root / "step_000002" / "manifest.json"
    sums = json.loads(manifest.read_text())["sha256"]
    if damage == "deleted":
        manifest.unlink()
    elif damage == "unreadable":
        manifest.write_text('{"sha256": {"model.saf')
    elif damage == "names_outside":
        manifest.write_text(json.dumps({"sha256": {**sums, "../step_000001/state.json": "0" * 64}}))
    else:
        del sums["model.safetensors"]
        manifest.write_text(json.dumps({"sha256": sums}))
    with pytest.warns(RuntimeWarning, match=r"step_000002.*manifest\.json.*previous good checkpoint .*step_000001"):
        assert latest_checkpoint(root) == root / "step_000001"


def test_checkpoints_written_before_checksums_still_load(two_checkpoints):
    """A run folder of the previous probe_lens (no manifest, no ``checksums`` in state.json) resumes."""
    root, model = two_checkpoints
    for d in (root / "step_000001", root / "step_000002"):
        (d / "manifest.json").unlink()
        state = json.loads((d / "state.json").read_text())
        del state["checksums"]
        (d / "state.json").write_text(json.dumps(state))
    with pytest.warns(RuntimeWarning, match=r"step_000002 has no manifest\.json .* unverified") as seen:
        assert latest_checkpoint(root) == root / "step_000002"
        loaded = tiny_model(seed=1)
        load_checkpoint(root / "step_000002", loaded)
    assert len([w for w in seen if "unverified" in str(w.message)]) == 1  # once per folder
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))


def test_trainer_resume_after_flipped_bits_equals_an_uninterrupted_run(tmp_path):
    from probe_lens.activations import collect
    from probe_lens.models import tokenize_pairs
    from probe_lens.probes import LogisticProbe
    from probe_lens.training import ProbeSFTConfig, train_probe_sft

    model = tiny_model(seed=0)
    data = tokenize_pairs(model, [f"p{i}:" for i in range(8)], [" abc", " \u00e9\u00e8x"] * 4, add_eos=True)
    hook = "blocks.1.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    probe = LogisticProbe(hook=hook).fit(acts, [0, 1] * 4)
    kw = dict(lr=1e-2, batch_size=4, checkpoint_every=1, keep_checkpoints=2, save_optimizer_final=True, progress=False)
    full = tiny_model(seed=0)
    train_probe_sft(full, data, probe, ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "full"), **kw))
    cut = ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "cut"), **kw)
    train_probe_sft(tiny_model(seed=0), data, probe, cut, stop_after=2)
    _flip_tensor_bytes(tmp_path / "cut" / "checkpoints" / "step_000002" / "model.safetensors")
    resumed = tiny_model(seed=0)
    with pytest.warns(RuntimeWarning, match=r"step_000002/model\.safetensors is corrupt.*step_000001"):
        res = train_probe_sft(resumed, data, probe, cut, resume=True)
    assert res.final_step == 3
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n


# ------------------------------------------------------------------ row 5: metrics.jsonl


@pytest.fixture
def metrics_file(tmp_path):
    with MetricsWriter(tmp_path / "metrics.jsonl") as w:
        for step in (1, 2, 3):
            w.write({"step": step, "loss": 1.0 / step})
    return tmp_path / "metrics.jsonl"


@pytest.mark.parametrize("bad", ['{"step": 2, "lo', "[1, 2]", b"\xff\xfe"])
def test_a_corrupt_middle_line_names_file_and_line(metrics_file, bad):
    lines = metrics_file.read_bytes().split(b"\n")
    lines[1] = bad if isinstance(bad, bytes) else bad.encode()
    metrics_file.write_bytes(b"\n".join(lines))
    with pytest.raises(MetricsFileError, match=r"metrics\.jsonl, line 2: "):
        read_metrics(metrics_file.parent)
    with pytest.raises(MetricsFileError, match=r"metrics\.jsonl, line 2: "):
        truncate_metrics(metrics_file, 3)  # a resume does not drop it silently either


def test_a_cut_off_last_line_is_tolerated(metrics_file):
    """A crash mid-write cuts off the last line only: readers skip it (today's behaviour, kept)."""
    whole = read_metrics(metrics_file)
    with open(metrics_file, "a") as f:
        f.write('{"step": 4, "loss": 0.2')
    assert read_metrics(metrics_file).equals(whole)
    truncate_metrics(metrics_file, 2)
    assert read_metrics(metrics_file)["step"].tolist() == [1, 2]
