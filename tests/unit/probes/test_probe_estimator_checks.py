"""Every probe class is a scikit-learn estimator by sklearn's own checks; labels map through classes_."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from probe_lens import _common
from probe_lens.probes import (
    AttentionProbe,
    BaseProbe,
    DiverseProbeEnsemble,
    LogisticProbe,
    MassMeanProbe,
    MaxPooledLogisticProbe,
    Probe,
    load_probe,
    probe_classes,
    register_probe_class,
    save_probe,
)
from probe_lens.probes.metrics import auroc

INSTANCES = [est for cls in probe_classes().values() for est in cls._test_instances()]


@parametrize_with_checks(INSTANCES, expected_failed_checks=lambda est: est._expected_failed_checks())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_every_built_in_class_is_checked():
    checked = {type(est) for est in INSTANCES}
    assert {LogisticProbe, MassMeanProbe, DiverseProbeEnsemble, MaxPooledLogisticProbe, AttentionProbe} <= checked
    for est in INSTANCES:
        assert is_classifier(est)
        assert get_tags(est).classifier_tags.multi_class is False


def _data(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 3.0
    y = (X[:, 0] - 3.0 + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


MAKERS = {
    "logistic": lambda **kw: LogisticProbe(C=0.5, **kw),
    "mass_mean": lambda **kw: MassMeanProbe(**kw),
    "ensemble": lambda **kw: DiverseProbeEnsemble(2, progress=False, **kw),
}


@pytest.mark.parametrize("kind", MAKERS)
@pytest.mark.parametrize(
    "labels",
    [np.array(["clean", "toxic"]), np.array([False, True]), np.array([1, 2]), np.array(["b", "a"], dtype=object)],
    ids=["str", "bool", "one_two", "object_unsorted"],
)
def test_labels_map_through_classes(kind, labels):
    X, y = _data()
    ref = MAKERS[kind]().fit(X, y)
    names = labels[y]
    probe = MAKERS[kind]().fit(X, names)
    # default positive class: the larger label (sorted order), so classes_ is sorted
    np.testing.assert_array_equal(probe.classes_, np.unique(labels))
    positive = np.unique(labels)[1]
    y01 = (names == positive).astype(np.int64)
    ref01 = MAKERS[kind]().fit(X, y01)
    np.testing.assert_array_equal(probe.directions_, ref01.directions_)
    np.testing.assert_array_equal(probe.decision_function(X), ref01.decision_function(X))
    pred = probe.predict(X)
    assert set(pred.tolist()) <= set(labels.tolist())
    np.testing.assert_array_equal(pred, probe.classes_[ref01.predict(X)])
    assert probe.score(X, names) == pytest.approx(auroc(y01, probe.decision_function(X)))
    assert probe.accuracy(X, names) == pytest.approx(np.mean(pred == names))
    assert probe.n_positive_ == int(y01.sum())
    if kind == "ensemble":  # members predict the ensemble's labels
        for m in probe.member_probes():
            np.testing.assert_array_equal(m.classes_, probe.classes_)
            assert set(m.predict(X).tolist()) <= set(labels.tolist())
    if labels.dtype.kind == "b":  # 0/1 and bools fit the same probe
        np.testing.assert_array_equal(probe.directions_, ref.directions_)


@pytest.mark.parametrize("kind", MAKERS)
def test_pos_label_picks_the_positive_class(kind, tmp_path):
    X, y = _data()
    names = np.array(["toxic", "clean"])[y]  # "toxic" where y == 0: sorted order would get it wrong
    probe = MAKERS[kind](pos_label="toxic").fit(X, names)
    np.testing.assert_array_equal(probe.classes_, ["clean", "toxic"])
    flipped = MAKERS[kind]().fit(X, 1 - y)
    np.testing.assert_allclose(probe.directions_, flipped.directions_, atol=1e-6)
    assert probe.score(X, names) > 0.9  # column 1 / decision > 0 / proba all mean "toxic"
    np.testing.assert_array_equal(probe.predict_proba(X)[:, 1] > 0.5, probe.predict(X) == "toxic")
    # an explicit pos_label that is the smaller label reorders classes_ as [negative, positive]
    back = MAKERS[kind](pos_label=0).fit(X, y)
    np.testing.assert_array_equal(back.classes_, [1, 0])
    np.testing.assert_allclose(back.decision_function(X), flipped.decision_function(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(back.predict(X), flipped.classes_[1 - flipped.predict(X)])
    with pytest.raises(ValueError, match="pos_label='spam' is not one of the labels"):
        MAKERS[kind](pos_label="spam").fit(X, names)
    with pytest.raises(ValueError, match="not fit on"):
        probe.score(X, np.where(y == 1, "toxic", "other"))
    # labels and pos_label survive save/load
    loaded = load_probe(save_probe(probe, tmp_path / kind))
    np.testing.assert_array_equal(loaded.classes_, probe.classes_)
    assert loaded.classes_.dtype.kind == "U" and loaded.get_params()["pos_label"] == "toxic"
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))


def test_old_probe_files_load_with_0_1_classes(tmp_path):
    """Probe files written before labels were mapped have no "classes" entry: they mean [0, 1]."""
    import json

    X, y = _data()
    path = save_probe(LogisticProbe().fit(X, y), tmp_path / "p")
    record = json.loads((path / "probe.json").read_text())
    assert record["state"].pop("classes") == [0, 1]
    (path / "probe.json").write_text(json.dumps(record))
    loaded = load_probe(path)
    np.testing.assert_array_equal(loaded.classes_, [0, 1])
    assert loaded.predict(X).dtype == np.int64


@pytest.mark.parametrize("kind", MAKERS)
def test_not_fitted_error_before_fit(kind):
    probe = MAKERS[kind]()
    X = np.zeros((3, 12))
    for call in (
        lambda: probe.predict(X),
        lambda: probe.predict_proba(X),
        lambda: probe.decision_function(X),
        lambda: probe.score(X, [0, 1, 0]),
        lambda: probe.forward(torch.zeros(3, 12)),
        lambda: probe.member_probes(),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
        with pytest.raises(RuntimeError):  # what callers caught before
            call()


def test_sklearn_model_selection_with_string_labels():
    X, y = _data()
    names = np.array(["clean", "toxic"])[y]
    for probe in (LogisticProbe(), MassMeanProbe(), DiverseProbeEnsemble(2, progress=False)):
        scores = cross_val_score(probe, X, names, cv=3, scoring="roc_auc")
        assert scores.shape == (3,) and scores.min() > 0.85
    search = GridSearchCV(LogisticProbe(), {"C": [0.01, 1.0]}, cv=3, scoring="accuracy").fit(X, names)
    assert search.best_estimator_.classes_.tolist() == ["clean", "toxic"]
    pipe = make_pipeline(StandardScaler(), LogisticProbe()).fit(X, names)
    assert set(pipe.predict(X)) == {"clean", "toxic"}


def test_one_family_for_single_probes_and_ensembles():
    X, y = _data()
    single = LogisticProbe().fit(X, y)
    ens = DiverseProbeEnsemble(3, progress=False).fit(X, y)
    for probe in (single, ens):
        assert isinstance(probe, Probe)
        members = probe.member_probes()
        assert all(isinstance(m, BaseProbe) for m in members)
        np.testing.assert_array_equal(probe.directions_, np.stack([m.direction_ for m in members]))
        assert probe.directions_.shape == (len(members), X.shape[1])
    assert not single.is_ensemble and single.member_probes() == [single]
    assert ens.is_ensemble and ens.member_probes() == ens.members_


class MaxVoteEnsemble(DiverseProbeEnsemble):
    """A user-defined ensemble variant (max-aggregated); registered only inside its test."""

    @classmethod
    def _test_instances(cls):
        return [cls(2, "penalty", aggregate="max", progress=False)]


def test_register_probe_class_accepts_any_probe(registries, tmp_path):
    """A custom ensemble (not a BaseProbe) registers, saves, loads and passes sklearn's checks."""
    from sklearn.utils.estimator_checks import check_estimator

    assert register_probe_class(MaxVoteEnsemble) is MaxVoteEnsemble
    assert probe_classes()["MaxVoteEnsemble"] is MaxVoteEnsemble
    X, y = _data()
    probe = MaxVoteEnsemble(2, aggregate="max", progress=False).fit(X, np.array(["a", "b"])[y])
    loaded = load_probe(save_probe(probe, tmp_path / "vote"))
    assert type(loaded) is MaxVoteEnsemble
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    check_estimator(MaxVoteEnsemble._test_instances()[0], on_skip=None)
    with pytest.raises(TypeError, match="only probe classes"):
        register_probe_class(StandardScaler)
    other = type("MaxVoteEnsemble", (MaxVoteEnsemble,), {})  # another class under the same name
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_probe_class(other)
    assert register_probe_class(other, replace=True) is other and probe_classes()["MaxVoteEnsemble"] is other


# ---------------------------------------------------------------------------------------------
# The shared helpers: one auroc, one POOLINGS, one hook parser, one threshold validator
# ---------------------------------------------------------------------------------------------


def test_auroc_single_documented_behaviour():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc(np.array([True, False]), [0.3, 0.3]) == 0.5
    assert auroc(torch.tensor([1, 0]), torch.tensor([0.9, 0.1], dtype=torch.bfloat16)) == 1.0
    assert auroc(["b", "a", "b"], [0.9, 0.1, 0.8], pos_label="b") == 1.0
    assert auroc(["b", "a", "b"], [0.9, 0.1, 0.8], pos_label="a") == 0.0
    with pytest.raises(ValueError, match="both classes.*only class 1.*single class"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="pair up"):
        auroc([0, 1], [0.1])
    with pytest.raises(ValueError, match="binary"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])


def test_common_helpers():
    from probe_lens.probes import base

    assert base.POOLINGS is _common.POOLINGS == ("mean", "last", "max")
    assert base.layer_of_hook is _common.hook_layer
    hook_layer = _common.hook_layer
    assert hook_layer("blocks.7.hook_resid_post") == 7
    assert hook_layer("blocks.12.attn.W_Q") == 12  # parameter names too
    assert hook_layer("model.blocks.3.mlp.hook_post") == 3
    assert hook_layer("blocks.5") == 5
    assert hook_layer("hook_embed") is None and hook_layer(None) is None
    assert hook_layer("unblocks.3.x") is None
    with pytest.raises(TypeError):
        hook_layer(3)
    check = _common.check_threshold
    assert check(0.5) == 0.5 and check(np.float32(0.25)) == 0.25
    assert check(1, allow_one=True) == 1.0
    for bad in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold must be"):
            check(bad)
    for bad in (True, "0.5", None):
        with pytest.raises(TypeError, match="number"):
            check(bad)
    with pytest.raises(ValueError, match=r"eval.threshold must be in \(0, 1\]"):
        check(0.0, name="eval.threshold", allow_one=True)


def test_probe_report_scores_probes_fit_on_any_labels():
    from probe_lens.probes import probe_report

    X, y = _data()
    named = {"ints": LogisticProbe().fit(X, y), "names": LogisticProbe().fit(X, np.array(["clean", "toxic"])[y])}
    report = probe_report(named, X, y).set_index("probe")
    assert report.loc["names", "accuracy"] == report.loc["ints", "accuracy"] > 0.8
    assert report.loc["names", "auroc"] == report.loc["ints", "auroc"]
