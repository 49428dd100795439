import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from decflow.config import FeaturesConfig
from decflow.model.features import FeatureEncoder

DOCS = ["the red apple is sweet", "green apple pie", "a red car and a blue car",
        "blue sky over the green hills", "apple and pear juice", "fast red car",
        None, "sweet pear pie with apple"]


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = len(DOCS)
    return pd.DataFrame({
        "x": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
        "c": ["red", "red", "blue", None, "green", "red", "blue", "pink"],
        "v": list(rng.normal(size=(n, 3)).astype(np.float32)),
        "t": DOCS,
    })


def all_kinds(**kw):
    return FeaturesConfig(numeric=["x"], categorical=["c"], vector={"v": 3}, text=["t"], **kw)


def test_numeric_imputes_median_then_standardises():
    df = pd.DataFrame({"x": [1.0, np.nan, 3.0, 8.0]})
    enc = FeatureEncoder(FeaturesConfig(numeric=["x"])).fit(df)
    # median of (1, 3, 8) = 3; imputed column (1, 3, 3, 8): mean 3.75, std sqrt(6.6875)
    expected = (np.array([1, 3, 3, 8]) - 3.75) / np.sqrt(6.6875)
    out = enc.transform(df)
    assert out.dtype == np.float32 and out.shape == (4, 1) and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-6)
    # NaN at transform time -> the training median
    np.testing.assert_allclose(enc.transform(pd.DataFrame({"x": [None]}))[0, 0],
                               (3 - 3.75) / np.sqrt(6.6875), rtol=1e-6)


def test_numeric_constant_column_keeps_scale_one():
    enc = FeatureEncoder(FeaturesConfig(numeric=["x"])).fit(pd.DataFrame({"x": [2.0, 2.0]}))
    assert enc.transform(pd.DataFrame({"x": [3.0]}))[0, 0] == 1.0


def test_categorical_keeps_most_frequent_and_has_unknown_bucket():
    df = pd.DataFrame({"c": ["red", "red", "red", "blue", "blue", "pink", None]})
    enc = FeatureEncoder(FeaturesConfig(categorical=["c"], max_categories=2)).fit(df)
    assert enc.feature_names_out_ == ["c=blue", "c=red", "c=__unknown__"]
    out = enc.transform(pd.DataFrame({"c": ["red", "blue", "pink", "never-seen", None]}))
    # one-hot, scaled to one unit of variance on the training rows: shares 3/7, 2/7, 2/7
    scale = 1 / np.sqrt(1 - (9 + 4 + 4) / 49)
    np.testing.assert_allclose(out, scale * np.array(
        [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]]), rtol=1e-6)
    assert enc.transform(df).var(axis=0).sum() == pytest.approx(1.0)
    assert enc.schema()["c"] == {"kind": "categorical", "dtype": "string",
                                 "categories": ["blue", "red"]}


def test_vector_passthrough_is_exact_for_every_storage():
    X = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    enc = FeatureEncoder(FeaturesConfig(vector={"v": 4}))
    arrow = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), 4)
    for col in [list(X), X.tolist(), pd.arrays.ArrowExtensionArray(arrow),
                pd.arrays.ArrowExtensionArray(arrow.cast(pa.list_(pa.float32())))]:
        df = pd.DataFrame({"v": col})
        out = enc.fit_transform(df)
        assert np.array_equal(out, X) and out.flags.c_contiguous
    assert enc.feature_names_out_ == ["v[0]", "v[1]", "v[2]", "v[3]"]
    # a sliced pyarrow list array (non-zero offset) still lines up
    sliced = pd.DataFrame({"v": pd.arrays.ArrowExtensionArray(arrow.slice(2))})
    assert np.array_equal(enc.transform(sliced), X[2:])


def test_vector_scaling_is_per_element():
    X = np.array([[0.0, 10.0], [2.0, 10.0]], dtype=np.float32)
    enc = FeatureEncoder(FeaturesConfig(vector={"v": 2}, scale_vectors=True))
    np.testing.assert_array_equal(enc.fit_transform(pd.DataFrame({"v": list(X)})),
                                  [[-1, 0], [1, 0]])


def test_wrong_vector_length_names_column_lengths_and_rows():
    df = pd.DataFrame({"v": [[1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 2.0, 3.0], None]})
    enc = FeatureEncoder(FeaturesConfig(vector={"v": 2}))
    with pytest.raises(ValueError, match=r"'v'.*expected length 2, found \[1, 3, 'null'\].*"
                                         r"positions: \[1, 3, 4\]"):
        enc.fit(df)
    arrow = pd.DataFrame({"v": pd.arrays.ArrowExtensionArray(
        pa.array([[1.0, 2.0], [1.0]], type=pa.list_(pa.float32())))})
    with pytest.raises(ValueError, match=r"expected length 2, found \[1\].*positions: \[1\]"):
        enc.fit(arrow)


def test_text_reimplementation_equals_sklearn(frame):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    enc = FeatureEncoder(FeaturesConfig(text=["t"], text_components=3)).fit(frame)
    docs = ["" if d is None else d for d in DOCS]
    tfidf = TfidfVectorizer().fit(docs)
    svd = TruncatedSVD(n_components=3, random_state=0).fit(tfidf.transform(docs))
    expected = svd.transform(tfidf.transform(docs))
    expected /= np.sqrt(expected.var(axis=0).sum())  # one unit of variance, as any column
    assert enc.feature_names_out_ == ["t:svd0", "t:svd1", "t:svd2"]
    np.testing.assert_allclose(enc.transform(frame), expected, atol=1e-6)
    # unseen words are ignored, an all-unknown document is the zero vector
    out = enc.transform(pd.DataFrame({"t": ["RED Apple zebra", "zebra"]}))
    np.testing.assert_allclose(out[0], enc.state_["t"]["block_scale"]
                               * svd.transform(tfidf.transform(["red apple"]))[0], atol=1e-6)
    assert not out[1].any()


def test_text_components_capped_by_vocabulary():
    enc = FeatureEncoder(FeaturesConfig(text=["t"], text_components=32))
    enc.fit(pd.DataFrame({"t": ["alpha beta", "beta gamma", "gamma alpha delta"] * 3}))
    assert enc.n_features_out_ == 3  # vocabulary of 4 -> at most 3 components


def test_output_layout_and_save_load_round_trip(frame, tmp_path):
    enc = FeatureEncoder(all_kinds(text_components=2, scale_vectors=True))
    out = enc.fit_transform(frame)
    assert out.shape == (len(frame), enc.n_features_out_) and out.dtype == np.float32
    assert enc.feature_names_out_[:2] == ["x", "c=blue"]
    assert enc.feature_names_out_[5:9] == ["c=__unknown__", "v[0]", "v[1]", "v[2]"]
    assert enc.feature_names_out_[-2:] == ["t:svd0", "t:svd1"]

    path = enc.save(tmp_path / "sub" / "encoder.json")
    doc = json.loads(path.read_text())  # plain, valid JSON
    assert doc["features"]["numeric"] == ["x"]
    assert [p.name for p in path.parent.iterdir()] == ["encoder.json"]  # no temp files left
    loaded = FeatureEncoder.load(path)
    assert np.array_equal(loaded.transform(frame), out)
    assert loaded.feature_names_out_ == enc.feature_names_out_
    assert loaded.schema() == enc.schema() and json.dumps(loaded.schema())
    assert loaded.schema_digest() == enc.schema_digest()


def test_schema_digest_tracks_layout(frame):
    a = FeatureEncoder(all_kinds()).fit(frame)
    b = FeatureEncoder(all_kinds()).fit(frame.sample(frac=1.0, random_state=1))
    assert a.schema_digest() == b.schema_digest()
    other_len = frame.assign(v=[np.append(v, 0.0) for v in frame["v"]])
    c = FeatureEncoder(FeaturesConfig(numeric=["x"], categorical=["c"], vector={"v": 4},
                                      text=["t"])).fit(other_len)
    d = FeatureEncoder(FeaturesConfig(numeric=["x"], categorical=["c"], vector={"v": 3})).fit(frame)
    e = FeatureEncoder(all_kinds()).fit(frame.assign(c="red"))  # other categories
    assert len({a.schema_digest(), c.schema_digest(), d.schema_digest(), e.schema_digest()}) == 4


def test_errors_name_the_problem(frame):
    enc = FeatureEncoder(all_kinds())
    with pytest.raises(ValueError, match="not fitted"):
        enc.transform(frame)
    with pytest.raises(ValueError, match=r"missing feature columns: \['c', 't'\]"):
        enc.fit(frame.drop(columns=["t", "c"]))
    enc.fit(frame)
    with pytest.raises(ValueError, match=r"missing feature columns: \['x'\]"):
        enc.transform(frame.drop(columns=["x"]))
    with pytest.raises(ValueError, match="'x' has non-numeric"):
        enc.transform(frame.assign(x="a"))


def test_vector_nan_elements_imputed_with_training_mean():
    enc = FeatureEncoder(FeaturesConfig(vector={"v": 2}))
    enc.fit(pd.DataFrame({"v": [[1.0, np.nan], [3.0, 4.0]]}))
    np.testing.assert_array_equal(enc.transform(pd.DataFrame({"v": [[np.nan, np.nan]]})), [[2, 4]])
    with pytest.raises(ValueError, match="lists of numbers"):
        enc.transform(pd.DataFrame({"v": ["ab"]}))


def test_integer_categories_survive_nulls_turning_the_column_float():
    enc = FeatureEncoder(FeaturesConfig(categorical=["c"])).fit(pd.DataFrame({"c": [3, 3, 7]}))
    assert enc.feature_names_out_ == ["c=3", "c=7", "c=__unknown__"]
    out = enc.transform(pd.DataFrame({"c": [3.0, np.nan, 7.0]}))
    assert enc.state_["c"]["block_scale"] == pytest.approx(1.5)  # shares 2/3, 1/3
    np.testing.assert_allclose(out / 1.5, [[1, 0, 0], [0, 0, 1], [0, 1, 0]], rtol=1e-6)


def test_numeric_columns_of_one_unit_share_one_scale():
    rng = np.random.default_rng(0)
    # pixel-like: spreads 4, 2 and a near-constant 0.05 (noise); max/median = 2 -> shared
    df = pd.DataFrame({"a": rng.normal(0, 4, 500), "b": rng.normal(0, 2, 500),
                       "c": rng.normal(0, 0.05, 500)})
    enc = FeatureEncoder(FeaturesConfig(numeric=["a", "b", "c"])).fit(df)
    assert enc.numeric_scaling_ == "shared"
    out = enc.transform(df)
    stds = df.std(ddof=0).to_numpy()
    shared = np.sqrt(np.mean(stds ** 2))
    np.testing.assert_allclose(out.std(axis=0), stds / shared, rtol=1e-5)
    assert out[:, 2].std() < 0.02  # the near-constant column is not blown up to weight 1
    # the same columns standardised one by one when asked
    col = FeatureEncoder(FeaturesConfig(numeric=["a", "b", "c"],
                                        numeric_scaling="column")).fit(df)
    assert col.numeric_scaling_ == "column"
    np.testing.assert_allclose(col.transform(df).std(axis=0), 1.0, rtol=1e-5)


def test_numeric_columns_of_different_units_are_standardised_each():
    rng = np.random.default_rng(1)
    # income next to age and a count: max/median std far above 10 -> per column
    df = pd.DataFrame({"income": rng.normal(5e4, 2e4, 400), "age": rng.normal(40, 12, 400),
                       "visits": rng.poisson(3, 400).astype(float)})
    enc = FeatureEncoder(FeaturesConfig(numeric=["income", "age", "visits"])).fit(df)
    assert enc.numeric_scaling_ == "column"
    np.testing.assert_allclose(enc.transform(df).std(axis=0), 1.0, rtol=1e-5)
    shared = FeatureEncoder(FeaturesConfig(numeric=["income", "age", "visits"],
                                           numeric_scaling="shared")).fit(df)
    assert shared.transform(df)[:, 0].std() > 0.99  # income swamps the others when forced


def test_numeric_scaling_rule():
    from decflow.model.features import SHARED_SPREAD_RATIO, numeric_scaling

    assert SHARED_SPREAD_RATIO == 10.0
    assert numeric_scaling([1.0, 2.0, 10.0]) == "shared"  # 10 x the median 2 is still shared
    assert numeric_scaling([1.0, 2.0, 20.1]) == "column"
    assert numeric_scaling([5.0]) == "column"  # one column: the same either way
    assert numeric_scaling([1.0, 100.0], "shared") == "shared"
    assert numeric_scaling([1.0, 1.0], "column") == "column"


def test_a_saved_encoder_transforms_as_fitted_with_a_shared_scale(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.normal(0, 3, 50), "b": rng.normal(1, 1, 50)})
    enc = FeatureEncoder(FeaturesConfig(numeric=["a", "b"])).fit(df)
    again = FeatureEncoder.load(enc.save(tmp_path / "enc.json"))
    np.testing.assert_array_equal(again.transform(df), enc.transform(df))
