"""Checkpoints under bad conditions: foreign, newer, corrupt, dangling, pruned; disk-space checks."""

import json
import shutil
from collections import namedtuple

import pytest
import torch

from probe_lens._disk import DiskSpaceError, check_free_disk, checkpoint_bytes
from probe_lens.testing import tiny_model
from probe_lens.training import load_checkpoint, save_checkpoint
from probe_lens.training.checkpoint import CheckpointError, CheckpointVersionError, latest_checkpoint


def _optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.tensor([[1, 5, 9, 13]])).sum().backward()
    opt.step()
    return opt


@pytest.fixture
def two_checkpoints(tmp_path):
    """Checkpoints at steps 1 and 2 (keep=2) of a tiny model; returns (root, model at step 2)."""
    model = tiny_model(seed=0)
    opt = _optimizer(model)
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, model, opt, keep=2)
    with torch.no_grad():
        model.embed.W_E.add_(1.0)
    save_checkpoint(root, 2, model, opt, keep=2)
    return root, model


def test_round_trip_restores_weights_and_optimizer(two_checkpoints):
    root, model = two_checkpoints
    assert latest_checkpoint(root) == root / "step_000002"
    other = tiny_model(seed=1)
    opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    state = load_checkpoint(root / "step_000002", other, opt)
    assert state["step"] == 2 and state["model"]["model_name"] == "probe-lens-tiny"
    for (n, a), b in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(a, b), n
    assert all("exp_avg_sq" in s for s in opt.state_dict()["state"].values())


def test_checkpoint_of_another_model_or_shape_is_refused_and_model_untouched(two_checkpoints):
    root, _ = two_checkpoints
    for other in (tiny_model(seed=0, n_layers=3), tiny_model(seed=0, d_model=64)):
        before = {n: p.clone() for n, p in other.named_parameters()}
        with pytest.raises(CheckpointError, match="another model"):
            load_checkpoint(root / "step_000002", other)
        assert all(torch.equal(before[n], p) for n, p in other.named_parameters())
    # a checkpoint that records no model (older files) still fails on the first shape that differs
    state_file = root / "step_000002" / "state.json"
    state = json.loads(state_file.read_text())
    del state["model"], state["checksums"]  # older files carried no model identity and no checksums
    state_file.write_text(json.dumps(state))
    (root / "step_000002" / "manifest.json").unlink()
    with pytest.warns(RuntimeWarning, match="no manifest.json .* unverified"):
        with pytest.raises(CheckpointError, match="has shape .* wrong model"):
            load_checkpoint(root / "step_000002", tiny_model(seed=0, d_model=64))


def test_newer_format_version_says_upgrade_and_is_never_skipped(two_checkpoints):
    root, _ = two_checkpoints
    state_file = root / "step_000002" / "state.json"
    state = json.loads(state_file.read_text())
    state["format_version"] = 99
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointVersionError, match="newer probe_lens .* upgrade probe_lens"):
        load_checkpoint(root / "step_000002", tiny_model(seed=0))
    with pytest.raises(CheckpointVersionError):
        latest_checkpoint(root)  # falling back to step 1 would silently drop work


@pytest.mark.parametrize("damage", ["truncated_weights", "truncated_optimizer", "invalid_state_json", "missing_extra"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(two_checkpoints, damage):
    root, _ = two_checkpoints
    d = root / "step_000002"
    if damage == "truncated_weights":
        f = d / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "truncated_optimizer":
        f = d / "optimizer.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "invalid_state_json":
        (d / "state.json").write_text('{"format_version": 1, "st')
    else:
        (d / "extra.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"step_000002"):
        load_checkpoint(d, tiny_model(seed=0))
    with pytest.warns(RuntimeWarning, match="step_000002.*using the previous good checkpoint .*step_000001"):
        assert latest_checkpoint(root) == root / "step_000001"


def test_corrupt_only_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_model(seed=0)
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, model, None)
    f = root / "step_000001" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="no usable checkpoint .*corrupt or truncated.*Delete"):
        latest_checkpoint(root)


def test_dangling_latest_json(two_checkpoints):
    root, _ = two_checkpoints
    shutil.rmtree(root / "step_000002")  # e.g. deleted by hand; latest.json still names it
    with pytest.warns(RuntimeWarning, match="points at .*step_000002, which is missing"):
        assert latest_checkpoint(root) == root / "step_000001"
    (root / "latest.json").write_text("{not json")
    with pytest.warns(RuntimeWarning, match="latest.json is unreadable"):
        assert latest_checkpoint(root) == root / "step_000001"
    shutil.rmtree(root / "step_000001")
    (root / "latest.json").write_text(json.dumps({"step": 2, "dir": "step_000002"}))
    with pytest.raises(CheckpointError, match="no usable checkpoint.*which is missing"):
        latest_checkpoint(root)


def test_a_folder_written_after_latest_json_is_ignored(two_checkpoints):
    """A crash between renaming step 3 into place and updating latest.json: latest.json wins."""
    root, model = two_checkpoints
    shutil.copytree(root / "step_000002", root / "step_000003")
    assert latest_checkpoint(root) == root / "step_000002"


def test_pruning_keeps_the_promised_number_and_cleans_interrupted_writes(tmp_path):
    model = tiny_model(seed=0)
    root = tmp_path / "checkpoints"
    for step in range(1, 7):
        save_checkpoint(root, step, model, None, keep=3)
        assert len(list(root.glob("step_*"))) == min(step, 3)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000004", "step_000005", "step_000006"]
    # a killed write leaves a temporary folder; a resumed run from step 4 leaves stale later steps
    (root / ".step_000007.abc123").mkdir()
    (root / ".step_000007.abc123" / "model.safetensors").write_bytes(b"half")
    save_checkpoint(root, 5, model, None, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_000004", "step_000005"]
    assert latest_checkpoint(root) == root / "step_000005"


def test_trainer_resumes_from_the_previous_checkpoint_when_the_latest_is_corrupt(tmp_path):
    from probe_lens.activations import collect
    from probe_lens.models import tokenize_pairs
    from probe_lens.probes import LogisticProbe
    from probe_lens.training import ProbeSFTConfig, train_probe_sft

    model = tiny_model(seed=0)
    data = tokenize_pairs(model, [f"p{i}:" for i in range(8)], [" abc", " \u00e9\u00e8x"] * 4, add_eos=True)
    y = [0, 1] * 4
    hook = "blocks.1.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    probe = LogisticProbe(hook=hook).fit(acts, y)
    kw = dict(lr=1e-2, batch_size=4, checkpoint_every=1, keep_checkpoints=2, save_optimizer_final=True, progress=False)
    full = tiny_model(seed=0)
    train_probe_sft(full, data, probe, ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "full"), **kw))
    cut = ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "cut"), **kw)
    train_probe_sft(tiny_model(seed=0), data, probe, cut, stop_after=2)
    f = tmp_path / "cut" / "checkpoints" / "step_000002" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:50])  # a disk error corrupted the newest checkpoint
    resumed = tiny_model(seed=0)
    with pytest.warns(RuntimeWarning, match="previous good checkpoint"):
        res = train_probe_sft(resumed, data, probe, cut, resume=True)
    assert res.final_step == 3
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n


# ------------------------------------------------------------------ disk honesty


def test_checkpoint_bytes_matches_what_is_written(tmp_path):
    model = tiny_model(seed=0)
    opt = _optimizer(model)
    trainable = [n for n, _ in model.named_parameters() if n.startswith("blocks.")]
    for with_opt in (False, True):
        root = tmp_path / f"opt{with_opt}"
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)
        save_checkpoint(root, 1, model, opt if with_opt else None)
        written = sum(f.stat().st_size for f in (root / "step_000001").iterdir())
        est = checkpoint_bytes(model, trainable, with_opt)
        # the optimizer here covers every parameter, the estimate only the trainable ones
        if not with_opt:
            assert abs(est - written) < 80 * 1024, (est, written)
    n_block = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert checkpoint_bytes(model, trainable, True) - checkpoint_bytes(model, trainable, False) >= 2 * 4 * n_block
    assert checkpoint_bytes(model, None, False, params="all") >= 4 * sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="lacks"):
        checkpoint_bytes(model, ["nope"], False)


def test_check_free_disk(monkeypatch, tmp_path):
    Usage = namedtuple("Usage", "total used free")
    seen = []

    def fake_usage(path):
        seen.append(path)
        return Usage(100 * 2**30, 99 * 2**30, 2**30)  # 1 GB free

    monkeypatch.setattr("probe_lens._disk.shutil.disk_usage", fake_usage)
    assert check_free_disk(tmp_path / "not" / "yet", 2**29, "checkpoints") == 2**30
    assert seen[-1] == tmp_path  # the nearest existing folder
    with pytest.raises(
        DiskSpaceError, match=r"not enough free disk for 7 training checkpoints .* about 3.20 GB, only 1.00 GB"
    ):
        check_free_disk(tmp_path, int(3.2 * 2**30), "7 training checkpoints")
