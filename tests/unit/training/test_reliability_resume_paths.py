"""Issue 26, row 12: a cell's training resumes when its folder is named another way or was moved."""

import shutil

import torch

from probe_lens.testing import tiny_model


def test_a_moved_training_folder_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    from probe_lens.activations import collect
    from probe_lens.models import tokenize_pairs
    from probe_lens.probes import LogisticProbe
    from probe_lens.training import ProbeSFTConfig, train_probe_sft

    model = tiny_model(seed=0)
    data = tokenize_pairs(model, [f"p{i}:" for i in range(8)], [" abc", " \u00e9\u00e8x"] * 4, add_eos=True)
    hook = "blocks.1.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    probe = LogisticProbe(hook=hook).fit(acts, [0, 1] * 4)
    kw = dict(lr=1e-2, batch_size=4, checkpoint_every=1, keep_checkpoints=2, progress=False)
    full = tiny_model(seed=0)
    train_probe_sft(full, data, probe, ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "full"), **kw))
    monkeypatch.chdir(tmp_path)
    train_probe_sft(tiny_model(seed=0), data, probe, ProbeSFTConfig(max_steps=3, out_dir="cut", **kw), stop_after=2)
    shutil.move(tmp_path / "cut", tmp_path / "moved")  # the study folder moved, named by an absolute path
    resumed = tiny_model(seed=0)
    res = train_probe_sft(
        resumed, data, probe, ProbeSFTConfig(max_steps=3, out_dir=str(tmp_path / "moved"), **kw), resume=True
    )
    assert res.final_step == 3
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
