"""Toxicity scorers: Detoxify's real code path on a tiny local checkpoint, alt-profanity-check,
the probe scorer (oracle: a hand-run forward pass), and ``get_scorer``'s choices and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probe_lens.scorers import (
    SCORERS,
    DetoxifyScorer,
    ProbeScorer,
    ProfanityCheckScorer,
    Scorer,
    ScorerOutputError,
    ScorerUnavailableError,
    check_scores,
    get_scorer,
    label,
    register_scorer,
)

# Detoxify's class order for its "original" model, but with toxicity second, so picking the head by
# name (not position) is tested.
CLASSES = ["severe_toxic", "toxic", "obscene", "threat", "insult", "identity_hate"]
WORDS = ["you", "are", "an", "idiot", "the", "weather", "is", "nice", "today", "stupid", "lovely", "day", "!", "."]
TEXTS = ["you are an idiot !", "the weather is nice today .", "stupid day", "", "lovely lovely day ."]


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    """A 2-layer BERT saved as (detoxify checkpoint file, HF config+tokenizer folder, eval-mode oracle)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    root = tmp_path_factory.mktemp("tiny_detoxify")
    cfg_dir = root / "bert"
    cfg_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (cfg_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(cfg_dir / "vocab.txt"), model_max_length=32)
    tokenizer.save_pretrained(cfg_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(CLASSES),
    )
    config.save_pretrained(cfg_dir)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger weights than BERT's init, so scores differ visibly between texts
        for module in (model.bert.embeddings.word_embeddings, model.bert.pooler.dense, model.classifier):
            module.weight.normal_(0.0, 1.0)
    checkpoint = {
        # detoxify calls config_class.from_pretrained(model_type): a local folder keeps it offline.
        "config": {
            "arch": {
                "args": {
                    "model_type": str(cfg_dir),
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizer",
                    "num_classes": len(CLASSES),
                }
            },
            "dataset": {"args": {"classes": CLASSES}},
        },
        "state_dict": model.state_dict(),
    }
    ckpt = root / "tiny_detoxify.ckpt"
    torch.save(checkpoint, ckpt)
    return ckpt, cfg_dir, model, tokenizer


def test_detoxify_tiny_checkpoint_real_code_path(tiny_detoxify):
    ckpt, cfg_dir, oracle, tokenizer = tiny_detoxify
    assert DetoxifyScorer.available(checkpoint=ckpt, huggingface_config_path=cfg_dir)
    scorer = DetoxifyScorer(checkpoint=ckpt, huggingface_config_path=cfg_dir, batch_size=2)
    assert scorer.class_names[1] == "toxicity"  # detoxify renamed "toxic"
    scores = scorer.score(TEXTS)
    assert scores.dtype == np.float64 and scores.shape == (len(TEXTS),)
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.ptp(scores) > 1e-3
    # oracle: the same BERT run directly through transformers, one text at a time, toxicity column
    with torch.no_grad():
        expected = [torch.sigmoid(oracle(**tokenizer([t], return_tensors="pt")).logits)[0, 1].item() for t in TEXTS]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_array_equal(scorer.score(TEXTS), scores)  # deterministic (eval mode)
    np.testing.assert_allclose(scorer.score(TEXTS[:1]), scores[:1], atol=1e-6)  # single text, batch of one
    desc = scorer.describe()
    json.dumps(desc)
    assert desc["name"] == "detoxify" and desc["version"] not in ("", "unknown")
    assert desc["details"]["checkpoint_id"].startswith("sha256:")
    assert desc["details"]["head"] == "toxicity"


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No detoxify checkpoint in torch.hub's cache and nothing in the HF cache."""
    import huggingface_hub.constants

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    yield
    torch.hub.set_dir(old)


def test_auto_falls_back_to_profanity_and_records_why(empty_caches):
    assert not DetoxifyScorer.available()
    scorer = get_scorer("auto")
    assert isinstance(scorer, ProfanityCheckScorer)
    desc = scorer.describe()
    assert desc["chosen_by"] == "auto" and desc["name"] == "profanity"
    assert "detoxify unavailable" in desc["reason"] and "torch hub cache" in desc["reason"]
    assert desc["version"] not in ("", "unknown")


def test_explicit_unavailable_scorer_errors(empty_caches, tmp_path):
    with pytest.raises(ScorerUnavailableError, match="allow_download=True"):
        get_scorer("detoxify")
    with pytest.raises(ScorerUnavailableError, match="does not exist"):
        get_scorer("detoxify", checkpoint=tmp_path / "missing.ckpt")
    with pytest.raises(ScorerUnavailableError, match="config.json"):
        DetoxifyScorer(checkpoint=__file__, huggingface_config_path=tmp_path)


def test_auto_picks_detoxify_when_available(tiny_detoxify):
    ckpt, cfg_dir, _, _ = tiny_detoxify
    scorer = get_scorer("auto", checkpoint=ckpt, huggingface_config_path=cfg_dir)
    assert isinstance(scorer, DetoxifyScorer)
    desc = scorer.describe()
    assert desc["chosen_by"] == "auto" and desc["name"] == "detoxify"
    assert "local checkpoint" in desc["reason"]
    assert "chosen_by" not in get_scorer("profanity").describe()


def test_get_scorer_bad_names_and_options():
    with pytest.raises(
        ValueError,
        match=r"unknown scorer 'perspective'; registered: \['auto', 'detoxify', (.*, )?'profanity', 'vader'",  # + test plugins
    ):
        get_scorer("perspective")
    with pytest.raises(TypeError, match="no options besides device"):
        get_scorer("profanity", batch_size=4)
    with pytest.raises(TypeError, match="unknown option"):
        get_scorer("auto", allow_download=True)
    with pytest.raises(ValueError, match="model_type"):
        DetoxifyScorer("huge")


def test_profanity_check_obvious_texts():
    scorer = ProfanityCheckScorer()
    toxic = ["You are a fucking idiot", "Shut up, you stupid piece of shit"]
    clean = ["I had a lovely walk in the park this morning", "The meeting is moved to Tuesday at ten"]
    scores = scorer.score(toxic + clean)
    assert scores.dtype == np.float64 and scores.shape == (4,)
    assert scores[:2].min() > 0.5 > scores[2:].max()
    np.testing.assert_array_equal(label(scores), [1, 1, 0, 0])


def test_scorer_bad_input():
    scorer = ProfanityCheckScorer()
    out = scorer.score([])
    assert out.shape == (0,) and out.dtype == np.float64
    assert scorer.score([""]).shape == (1,)  # empty strings are scored
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        scorer.score(["fine", 3])
    with pytest.raises(TypeError, match="single string"):
        scorer.score("just one text")
    with pytest.raises(TypeError, match="NoneType"):
        scorer.score([None])


def test_label_threshold_validation():
    np.testing.assert_array_equal(label(np.array([0.1, 0.5, 0.9]), threshold=0.5), [0, 1, 1])
    np.testing.assert_array_equal(label([0.1, 0.5, 0.9], threshold=0.95), [0, 0, 0])
    assert label(np.zeros(0)).shape == (0,)
    for bad in (0, 1, 0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            label([0.3], threshold=bad)
    with pytest.raises(TypeError):
        label([0.3], threshold=True)
    with pytest.raises(ValueError, match="probabilities"):
        label([1.3])


# ---- probe scorer ------------------------------------------------------------------------------


@pytest.fixture
def fitted_probe():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 32))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    return LogisticRegression(C=10.0).fit(X, y)


def test_probe_scorer_activations(tiny, fitted_probe):
    scorer = ProbeScorer(tiny, fitted_probe, hook=1)
    assert scorer.hook == "blocks.1.hook_resid_post"
    X = np.random.default_rng(1).normal(size=(7, 32))
    expected = fitted_probe.predict_proba(X)[:, 1]
    np.testing.assert_allclose(scorer.score_activations(X), expected, rtol=1e-12)
    np.testing.assert_allclose(scorer.score_activations(torch.tensor(X, dtype=torch.float32)), expected, atol=1e-6)
    assert scorer.score_activations(np.zeros((0, 32))).shape == (0,)
    with pytest.raises(ValueError, match="pooled"):
        scorer.score_activations(np.zeros((2, 3, 32)))
    with pytest.raises(TypeError, match="predict_proba"):
        ProbeScorer(tiny, object(), hook=1)
    assert scorer.describe()["details"]["hook"] == "blocks.1.hook_resid_post"


def _oracle_mean(model, tokens, positions, hook):
    """Mean of ``hook`` over ``positions`` from a plain unpadded forward pass of one sequence."""
    _, cache = model.run_with_cache(tokens.unsqueeze(0), names_filter=hook)
    return cache[hook][0, positions].mean(dim=0).double().numpy()


def test_probe_scorer_texts_matches_unpadded_forward(tiny, fitted_probe):
    hook = "blocks.1.hook_resid_post"
    scorer = ProbeScorer(tiny, fitted_probe, hook=hook)
    texts = ["short", "a somewhat longer text here", "mid length"]
    scores = scorer.score(texts)
    X = []
    for t in texts:
        toks = tiny.to_tokens(t, prepend_bos=True)[0]
        X.append(_oracle_mean(tiny, toks, slice(1, None), hook))  # BOS excluded
    np.testing.assert_allclose(scores, fitted_probe.predict_proba(np.stack(X))[:, 1], atol=1e-5)
    with pytest.raises(ValueError, match="no tokens besides BOS"):
        scorer.score(["fine", ""])


def test_probe_scorer_generation_pools_response_only(tiny, fitted_probe):
    from probe_lens.models import generate

    hook = "blocks.0.hook_resid_post"
    gen = generate(tiny, ["hi", "a longer prompt"], max_new_tokens=5, seed=0, progress=False)
    scores = ProbeScorer(tiny, fitted_probe, hook=hook).score_generation(gen)
    X = []
    for i in range(len(gen)):
        real = gen.attention_mask[i].bool()
        toks = gen.tokens[i][real]
        resp = gen.response_mask[i][real].bool().nonzero().flatten()
        X.append(_oracle_mean(tiny, toks, resp, hook))
    np.testing.assert_allclose(scores, fitted_probe.predict_proba(np.stack(X))[:, 1], atol=1e-5)


@pytest.fixture
def cached_original(tiny_detoxify, tmp_path, monkeypatch):
    """The tiny BERT placed where detoxify's 'original' model lives once downloaded: the checkpoint
    in torch.hub's cache under its release file name, the backbone in the HF cache as bert-base-uncased."""
    import shutil

    import huggingface_hub.constants

    from probe_lens.scorers.detoxify_scorer import hub_checkpoint_path

    ckpt, cfg_dir, _, _ = tiny_detoxify
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    hf_cache = tmp_path / "hf_hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    loaded = torch.load(ckpt, weights_only=False)  # our own file
    loaded["config"]["arch"]["args"]["model_type"] = "bert-base-uncased"
    target = hub_checkpoint_path("original")
    target.parent.mkdir(parents=True)
    torch.save(loaded, target)
    repo = hf_cache / "models--bert-base-uncased"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(cfg_dir, repo / "snapshots" / commit)
    yield
    torch.hub.set_dir(old)


def test_auto_picks_cached_detoxify_model_type(cached_original, tiny_detoxify):
    _, _, oracle, tokenizer = tiny_detoxify
    assert DetoxifyScorer.available("original")
    assert not DetoxifyScorer.available("unbiased")
    scorer = get_scorer("auto")
    assert isinstance(scorer, DetoxifyScorer)
    desc = scorer.describe()
    assert desc["chosen_by"] == "auto" and "toxic_original-c1212f89.ckpt" in desc["reason"]
    assert desc["details"]["model_type"] == "original"
    assert desc["details"]["checkpoint_id"] == "toxic_original-c1212f89.ckpt"
    with torch.no_grad():
        expected = torch.sigmoid(oracle(**tokenizer(TEXTS[:2], return_tensors="pt", padding=True)).logits)[:, 1]
    np.testing.assert_allclose(scorer.score(TEXTS[:2]), expected.numpy(), atol=1e-5)


def test_scorer_device_option(tiny_detoxify):
    """``get_scorer(..., device=)``: cpu by default, passed to Detoxify, accepted by every name, checked."""
    ckpt, cfg_dir, _, _ = tiny_detoxify
    default = get_scorer("detoxify", checkpoint=ckpt, huggingface_config_path=cfg_dir)
    assert default.describe()["details"]["device"] == "cpu"
    auto = get_scorer("auto", checkpoint=ckpt, huggingface_config_path=cfg_dir, device=torch.device("cpu"))
    assert isinstance(auto, DetoxifyScorer) and auto.describe()["details"]["device"] == "cpu"
    assert {p.device.type for p in auto._model.model.parameters()} == {"cpu"}
    np.testing.assert_allclose(auto.score(TEXTS), default.score(TEXTS), atol=1e-6)
    assert isinstance(get_scorer("profanity", device="cpu"), ProfanityCheckScorer)  # bag of words: CPU anyway
    with pytest.raises(ValueError, match="torch device"):
        get_scorer("detoxify", checkpoint=ckpt, huggingface_config_path=cfg_dir, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ScorerUnavailableError, match="CUDA is not available"):
            get_scorer("auto", checkpoint=ckpt, huggingface_config_path=cfg_dir, device="cuda")


class ConstantScorer(Scorer):
    """A user's scorer: the same P for every text (``value``), on the device it was built for."""

    name = "constant"

    def __init__(self, device: str = "cpu", value: float = 0.25):
        super().__init__()
        self.device, self.value = device, value

    def _score(self, texts):
        return [self.value] * len(texts)


def test_a_user_registers_a_scorer(registries):
    """The registry is open: a registered factory is built by name (with device and options), is a valid
    scorer name for a behaviour, and is replaced only on purpose."""
    from probe_lens.behaviours import Behaviour
    from probe_lens.data import Prompt

    assert register_scorer("constant", ConstantScorer) is ConstantScorer
    assert "constant" in SCORERS and "constant" in SCORERS.names()
    scorer = get_scorer("constant", device=torch.device("cpu"), value=0.75)
    assert isinstance(scorer, ConstantScorer) and scorer.device == "cpu"
    np.testing.assert_array_equal(scorer.score(["a", "b"]), [0.75, 0.75])
    b = Behaviour("constancy", "yes", "no", lambda: [Prompt("a", "Hi", "provocative", "t")], scorer="constant",
                  scorer_kwargs={"value": 0.5})  # fmt: skip
    assert b.get_scorer().score(["x"]).tolist() == [0.5]
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_scorer("constant", lambda device, **kw: ConstantScorer(device, 0.1))
    register_scorer("constant", lambda device, **kw: ConstantScorer(device, 0.1), replace=True)
    assert get_scorer("constant").score(["x"]).tolist() == [0.1]
    register_scorer("broken", lambda device: "not a scorer")
    with pytest.raises(TypeError, match=r"scorer 'broken' returned a str, which lacks \['score', 'describe'\]"):
        get_scorer("broken")
    with pytest.raises(TypeError, match="callable"):
        register_scorer("nothing", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="did you mean 'constant'"):
        get_scorer("constnt")


@pytest.mark.parametrize(
    "raw, match",
    [
        ([0.5], r"scorer 'constant' returned 1 scores for 2 texts \(one per text is needed\)"),
        ([0.5, float("nan")], r"returned NaN/inf for 1 of 2 texts \(first: text 1, 'bb'\)"),
        ([0.5, 1.5], r"returned 1 of 2 scores outside \[0, 1\] \(min 0\.5, max 1\.5\)"),
        (["a", "b"], "not a list of numbers"),
    ],
)
def test_scores_are_checked_once_with_one_error(raw, match):
    """Scorer.score and the dataset builder share check_scores: one ScorerOutputError (a ValueError)."""
    scorer = ConstantScorer()
    scorer._score = lambda texts: raw
    with pytest.raises(ScorerOutputError, match=match):
        scorer.score(["a", "bb"])
    with pytest.raises(ScorerOutputError, match=match.replace("'constant'", "'x'")):
        check_scores(raw, ["a", "bb"], "x")
    assert issubclass(ScorerOutputError, ValueError)
    np.testing.assert_array_equal(check_scores([0, 1], 2, "x"), [0.0, 1.0])


def test_a_package_scorer_names_its_missing_package():
    from probe_lens.scorers import PackageScorer

    class Missing(PackageScorer):
        name, dist, module = "missing", "no-such-dist", "no_such_module_for_probe_lens"

        def _setup(self, backend):
            raise AssertionError("never reached")

        def _score(self, texts):
            return [0.0] * len(texts)

    assert not Missing.available() and ProfanityCheckScorer.available()
    with pytest.raises(
        ScorerUnavailableError, match="the 'missing' scorer needs the no-such-dist package: pip install no-such-dist"
    ):
        Missing()
    profanity = ProfanityCheckScorer()
    assert profanity.describe()["details"] == {"package": "alt-profanity-check"}
    assert profanity.version not in ("", "unknown")
