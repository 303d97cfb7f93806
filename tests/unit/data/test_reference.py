"""Reference continuations: the shipped set, per-row regeneration, and a study that reads instead of sampling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from probe_lens.data import load_prompts
from probe_lens.data.builder import BuildConfig, build_dataset, dataset_from_reference
from probe_lens.data.reference import (
    ReferenceConfig,
    ReferenceMismatch,
    build_reference,
    load_reference,
    provenance_path,
)
from probe_lens.experiments import Study
from probe_lens.models.fast_sampling import sampler_id
from probe_lens.models.generation import generate
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config

# ------------------------------------------------------------------------------------ the shipped set


# ------------------------------------------------------------------------------------ per-row seeds


def test_row_seeds_make_a_sample_independent_of_its_batch(tiny):
    prompts = ["hello there", "a much longer prompt about nothing at all", "x"]
    seeds = [11, 22, 33]
    together = generate(tiny, prompts, max_new_tokens=8, row_seeds=seeds, batch_size=3, progress=False)
    for i in range(3):
        alone = generate(tiny, [prompts[i]], max_new_tokens=8, row_seeds=[seeds[i]], batch_size=1, progress=False)
        a = alone.tokens[0, alone.prompt_len :][alone.response_mask[0, alone.prompt_len :].bool()]
        t = together.tokens[i, together.prompt_len :][together.response_mask[i, together.prompt_len :].bool()]
        assert torch.equal(a, t)
    with pytest.raises(ValueError, match="not both"):
        generate(tiny, prompts, row_seeds=seeds, seed=1, progress=False)
    with pytest.raises(ValueError, match="one per prompt"):
        generate(tiny, prompts, row_seeds=seeds[:2], progress=False)


# ------------------------------------------------------------------------------------ build and read


@pytest.fixture
def tiny_reference(tmp_path):
    model = tiny_model(n_layers=4)
    prompts = [p for p in load_prompts() if p.tag == "provocative"][:40]
    cfg = ReferenceConfig(samples_per_prompt=3, max_new_tokens=6, batch_size=16, chunk_prompts=16)
    path = tmp_path / "tiny_ref.jsonl.gz"
    ref = build_reference(
        model, prompts, non_ascii_scorer(), cfg, out=path, progress=False, provenance={"command": "test"}
    )
    return model, prompts, path, ref


def test_build_reference_writes_resumable_parts_and_a_readable_file(tiny_reference):
    model, prompts, path, ref = tiny_reference
    again = load_reference(path)
    assert len(again) == 3 * len(prompts)
    pd.testing.assert_frame_equal(again.rows, ref.rows, check_dtype=False)
    assert json.loads(provenance_path(path).read_text())["command"] == "test"
    parts = sorted((path.parent / (path.name + ".parts")).glob("part*.json"))
    assert len(parts) == 3
    # a rerun reuses the parts (a corrupted row would show up in the rows it returns)
    payload = json.loads(parts[0].read_text())
    payload["rows"]["response"][0] = "REUSED"
    parts[0].write_text(json.dumps(payload))
    rerun = build_reference(model, prompts, non_ascii_scorer(), ref.config, out=path, progress=False)
    assert rerun.rows["response"].iloc[0] == "REUSED"
    # ...but not a part another version of the sampling code made: it is sampled again
    assert payload["stamp"]["sampler"] == sampler_id(ref.config.fast)
    payload["stamp"]["sampler"] = "fast-1"
    parts[0].write_text(json.dumps(payload))
    rerun = build_reference(model, prompts, non_ascii_scorer(), ref.config, out=path, progress=False)
    pd.testing.assert_frame_equal(rerun.rows, ref.rows, check_dtype=False)


def test_reference_dataset_equals_the_sampled_one(tiny_reference):
    """Same seeds, same rows: reading the reference gives the dataset sampling gives."""
    model, prompts, path, ref = tiny_reference
    bc = BuildConfig(
        hooks=[1, 2],
        samples_per_prompt=2,
        max_new_tokens=6,
        max_rounds=1,
        min_minority=0,
        batch_size=16,
        chunk_prompts=16,
        threshold=0.75,
    )
    sampled = build_dataset(model, prompts, non_ascii_scorer(), bc, progress=False)
    read = dataset_from_reference(model, ref, prompts, non_ascii_scorer(), bc, progress=False)
    cols = ["prompt_id", "response", "score", "label", "balanced", "split", "sample", "row_seed"]
    pd.testing.assert_frame_equal(read.examples[cols], sampled.examples[cols], check_dtype=False)
    for h in sampled.hooks:
        torch.testing.assert_close(read.acts[h], sampled.acts[h], atol=1e-5, rtol=1e-5)
    assert read.meta["source"]["reference"] == path.name


def test_reference_mismatch_is_named(tiny_reference):
    model, prompts, path, ref = tiny_reference
    for change, words in (
        ({"max_new_tokens": 8}, "max_new_tokens"),
        ({"samples_per_prompt": 5}, "samples per prompt"),
        ({"seed": 3}, "seed"),
        ({"temperature": 0.7}, "temperature"),
    ):
        bc = BuildConfig(hooks=[1], threshold=0.75, **{"max_new_tokens": 6, "samples_per_prompt": 2, **change})
        with pytest.raises(ReferenceMismatch, match=words):
            dataset_from_reference(model, ref, prompts, non_ascii_scorer(), bc, progress=False)
    other = [p for p in load_prompts() if p.tag == "neutral"][:3]
    with pytest.raises(ReferenceMismatch, match="not in it"):
        dataset_from_reference(
            model,
            ref,
            other,
            non_ascii_scorer(),
            BuildConfig(hooks=[1], max_new_tokens=6, samples_per_prompt=2),
            progress=False,
        )


def _tiny_study(tmp_path, name, **overrides):
    cfg = tiny_study_config(
        n_probe_prompts=60, cells=["base", "probe_sft_1"], data={"samples_per_prompt": 2}, **overrides
    )
    return Study(
        cfg, tmp_path / name, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False
    )


def test_a_study_on_the_reference_gives_the_results_of_sampling(tmp_path):
    # the reference covers every provocative prompt the study's pool may draw
    model = tiny_model(n_layers=4)
    pool = [p for p in load_prompts() if p.tag == "provocative"]
    path = tmp_path / "ref.jsonl.gz"
    build_reference(
        model,
        pool,
        non_ascii_scorer(),
        ReferenceConfig(samples_per_prompt=2, max_new_tokens=6, batch_size=32),
        out=path,
        progress=False,
    )
    fresh = _tiny_study(tmp_path, "fresh", data_source="fresh")
    read = _tiny_study(tmp_path, "read", data_source=str(path))
    assert fresh.reference_set() is None and read.reference_set() is not None
    fresh.run()
    read.run()
    ra, rb = pd.read_csv(fresh.out / "results.csv"), pd.read_csv(read.out / "results.csv")
    num = [c for c in ra.columns if pd.api.types.is_numeric_dtype(ra[c]) and not c.endswith("_s")]
    assert len(num) > 20
    np.testing.assert_allclose(rb[num].to_numpy(float), ra[num].to_numpy(float), atol=1e-4, equal_nan=True)
    assert "source" in read.build_data().meta and "source" not in fresh.build_data().meta


def test_auto_falls_back_to_sampling_and_reference_insists(tmp_path):
    # the shipped set is for the embedded model: the tiny model's study samples afresh under `auto`
    assert _tiny_study(tmp_path, "auto").reference_set() is None
    with pytest.raises(ReferenceMismatch, match="sampled from gemma-3-270m, not probe-lens-tiny"):
        _tiny_study(tmp_path, "insist", data_source="reference").reference_set()
    with pytest.raises(ValueError, match="data_source must be"):
        tiny_study_config(data_source="somewhere")


def test_cli_fresh_data_flag_sets_the_source(tmp_path, capsys):
    from probe_lens.cli import main

    assert main(["config", "--preset", "quick", "--fresh-data"]) == 0
    assert "data_source: fresh" in capsys.readouterr().out
    assert main(["config", "--preset", "quick"]) == 0
    assert "data_source: auto" in capsys.readouterr().out
