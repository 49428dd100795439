"""Column relevance (label-free weights) and how the feature encoder applies them."""

import json

import numpy as np
import pandas as pd
import pytest

from decflow.config import FeaturesConfig
from decflow.model.features import FeatureEncoder
from decflow.model.relevance import column_relevance, relevance_weights


def groups_and_noise(n=600, seed=0):
    """Three groups 6 std apart in `a` and `b`; beside them noise of several kinds."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, n)
    ab = np.array([[0, 0], [6, 0], [0, 6]])[g] + rng.normal(size=(n, 2))
    words = np.array([f"word{i}" for i in range(300)])
    frame = pd.DataFrame({
        "a": ab[:, 0], "b": ab[:, 1],
        "amount": rng.lognormal(8, 1.5, n),  # another unit, heavy tail
        "score": rng.normal(0, 0.01, n),
        "region": rng.choice(["north", "south", "east"], n),
        "store": rng.choice([f"s{i}" for i in range(40)], n),
        "comment": [" ".join(rng.choice(words, 5)) for _ in range(n)],
    })
    return frame, g


ALL_KINDS = FeaturesConfig(numeric=["a", "b", "amount", "score"],
                           categorical=["region", "store"], text=["comment"])


def test_noise_of_every_kind_gets_weight_zero_and_the_groups_full_weight():
    frame, _ = groups_and_noise()
    enc = FeatureEncoder(ALL_KINDS).fit(frame)
    assert enc.weights_ == {"a": 1.0, "b": 1.0, "amount": 0.0, "score": 0.0, "region": 0.0,
                            "store": 0.0, "comment": 0.0}
    rel = enc.relevance_
    assert min(rel["a"], rel["b"]) > 0.15
    assert max(rel[c] for c in ("amount", "score", "region", "store", "comment")) < 0.0
    # weight 0: the column no longer moves a row in the encoded space
    X = enc.transform(frame)
    other = enc.transform(frame.assign(region="south", store="s3", amount=1.0,
                                       comment="completely different words"))
    np.testing.assert_array_equal(X, other)


def test_a_table_without_shared_structure_keeps_equal_weights():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=500), "y": rng.exponential(size=500),
                          "c": rng.choice(list("abcd"), 500)})
    enc = FeatureEncoder(FeaturesConfig(numeric=["x", "y"], categorical=["c"])).fit(frame)
    assert enc.weights_ == {"x": 1.0, "y": 1.0, "c": 1.0}
    assert all(r < 0.05 for r in enc.relevance_.values())


def test_duplicated_rows_do_not_make_noise_relevant():
    frame, _ = groups_and_noise(300)
    copies = pd.concat([frame] * 5, ignore_index=True)  # whole rows repeated, noise too
    enc = FeatureEncoder(ALL_KINDS).fit(copies)
    assert enc.weights_["region"] == 0.0 and enc.weights_["amount"] == 0.0
    assert enc.weights_["a"] == enc.weights_["b"] == 1.0


def test_informative_columns_of_every_kind_keep_their_weight():
    frame, g = groups_and_noise()
    rng = np.random.default_rng(2)
    # a category and a text that follow the groups (80% / mostly), beside the noise
    frame["segment"] = np.where(rng.random(len(g)) < 0.8, np.array(["x", "y", "z"])[g], "x")
    frame["note"] = [f"topic{k} " + " ".join(rng.choice(["lorem", "ipsum", "dolor"], 3))
                     for k in g]
    enc = FeatureEncoder(FeaturesConfig(numeric=["a", "b", "amount"],
                                        categorical=["segment", "region"],
                                        text=["note", "comment"])).fit(frame)
    w = enc.weights_
    assert w["a"] == w["b"] == w["segment"] == w["note"] == 1.0
    assert w["amount"] == w["region"] == w["comment"] == 0.0


def test_equal_weighting_and_single_columns_are_not_measured():
    frame, _ = groups_and_noise()
    equal = FeatureEncoder(ALL_KINDS.model_copy(update={"column_weighting": "equal"})).fit(frame)
    assert set(equal.weights_.values()) == {1.0}
    assert set(equal.relevance_.values()) == {None}
    single = FeatureEncoder(FeaturesConfig(numeric=["a"])).fit(frame)
    assert single.weights_ == {"a": 1.0} and single.relevance_ == {"a": None}


def test_relevance_weights_scale_to_half_the_best():
    np.testing.assert_allclose(relevance_weights(np.array([0.8, 0.4, 0.2, -0.05])),
                               [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_array_equal(relevance_weights(np.array([0.04, -0.02])), [1.0, 1.0])
    np.testing.assert_array_equal(relevance_weights(np.array([np.nan, np.nan])), [1.0, 1.0])


def test_column_relevance_edge_cases_and_checks():
    rng = np.random.default_rng(3)
    relevance, weight = column_relevance([rng.normal(size=(50, 1))])
    assert np.isnan(relevance).all() and weight.tolist() == [1.0]
    few = [np.arange(5.0)[:, None], np.arange(5.0)[:, None]]  # 5 distinct rows < 15 + 2
    assert column_relevance(few)[1].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="same rows"):
        column_relevance([np.zeros((5, 1)), np.zeros((6, 1))])
    with pytest.raises(ValueError, match="at least one column"):
        column_relevance([])
    x = rng.normal(size=(400, 1))
    rel, _ = column_relevance([x, 2 * x + 1, rng.normal(size=(400, 1))])
    assert rel[0] > 0.9 and rel[1] > 0.9 and rel[2] < 0.0


def test_a_two_valued_category_sits_as_its_standardised_indicator():
    rng = np.random.default_rng(4)
    c = rng.choice(["yes", "no"], 400, p=[0.3, 0.7])
    frame = pd.DataFrame({"c": c, "x": rng.normal(size=400)})
    X = FeatureEncoder(FeaturesConfig(numeric=["x"], categorical=["c"],
                                      column_weighting="equal")).fit_transform(frame)
    onehot = X[:, 1:3]  # c=no, c=yes (c=__unknown__ is all 0)
    indicator = (c == "yes").astype(float)
    standardised = (indicator - indicator.mean()) / indicator.std()
    # the two values are as far apart as the standardised indicator's two values
    assert np.linalg.norm(onehot[c == "yes"][0] - onehot[c == "no"][0]) == pytest.approx(
        standardised.max() - standardised.min(), rel=1e-5)
    assert X[:, 3].max() == 0.0


def test_weights_survive_save_and_load_and_version_1_files_still_load(tmp_path):
    frame, _ = groups_and_noise()
    enc = FeatureEncoder(ALL_KINDS).fit(frame)
    again = FeatureEncoder.load(enc.save(tmp_path / "enc.json"))
    assert again.weights_ == enc.weights_ and again.relevance_ == enc.relevance_
    np.testing.assert_array_equal(again.transform(frame), enc.transform(frame))
    # a file written before weights existed transforms as it did then: every weight 1
    doc = json.loads((tmp_path / "enc.json").read_text())
    doc["version"] = 1
    for st in doc["state"].values():
        st.pop("weight"), st.pop("relevance"), st.pop("block_scale", None)
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    old = FeatureEncoder.load(tmp_path / "v1.json")
    assert set(old.weights_.values()) == {1.0}
    np.testing.assert_array_equal(old.transform(frame)[:, :2], enc.transform(frame)[:, :2])
    doc["version"] = 3
    (tmp_path / "v3.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"not a FeatureEncoder file of a version in \[1, 2\]"):
        FeatureEncoder.load(tmp_path / "v3.json")
