import json
import re

import numpy as np
import pandas as pd
import pytest

from decflow.config import FeaturesConfig
from decflow.insight.profiles import ClusterProfiles, cluster_profiles

SIZES = (300, 200, 100)  # clusters 0, 1, 2; cluster 3 of k=4 stays empty
K = 4
SCRIPT = "<script>alert('x|y')</script>"
FEATURES = FeaturesConfig(numeric=["income", "age", "const", "epoch"], categorical=["city"],
                          vector={"emb": 4, "pixels": 65}, text=["note"])


@pytest.fixture(scope="module")
def planted():
    """Rows with one planted difference per cluster:

    - cluster 0: ``income`` +30 (3 std); one row of the singleton city "tokyo";
      ``pixels[0]`` +10 (a vector too long to profile, so never named)
    - cluster 1: ``age`` -30 (-2.5 std; age has 10% nulls); ``city`` "paris" in 80% of rows
      (paris appears nowhere else)
    - cluster 2: ``emb[2]`` +4 (4 std); "refund" in 70% of ``note``s (2% elsewhere); 20 null
      cities and 5 cities holding a script tag
    ``const`` is 0.3 everywhere (its float64 mean over 600 rows is not exactly 0.3); ``epoch``
    is around 1.7e9, +1 std in cluster 0 (sums of squares of raw values would cancel out);
    ``emb[0]``, ``emb[1]``, ``emb[3]`` are noise. Ids are 1000 +
    row position; cluster order shuffled.
    """
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(3), SIZES))
    n = len(labels)
    income = rng.normal(50, 10, n) + 30 * (labels == 0)
    age = rng.normal(40, 12, n) - 30 * (labels == 1)
    age[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["london", "berlin", "madrid", "rome", "oslo"], n).astype(object)
    in1 = np.flatnonzero(labels == 1)
    city[in1[rng.random(len(in1)) < 0.8]] = "paris"
    in0, in2 = np.flatnonzero(labels == 0), np.flatnonzero(labels == 2)
    city[in0[0]] = "tokyo"
    city[in2[:20]] = None
    city[in2[20:25]] = SCRIPT
    emb = rng.normal(size=(n, 4))
    emb[:, 2] += 4 * (labels == 2)
    pixels = rng.random((n, 65))
    pixels[:, 0] += 10 * (labels == 0)
    filler = np.array(["the", "order", "arrived", "package", "was", "late", "box", "blue",
                       "customer", "called", "about", "a"])
    refund = np.where(labels == 2, rng.random(n) < 0.7, rng.random(n) < 0.02)
    note = [" ".join(rng.choice(filler, 6)) + (" refund" if r else "") for r in refund]
    frame = pd.DataFrame({"id": 1000 + np.arange(n), "income": income, "age": age,
                          "const": 0.3, "epoch": 1.7e9 + rng.normal(0, 1, n) + (labels == 0), "city": city,
                          "emb": list(emb), "pixels": list(pixels), "note": note})
    confidence = rng.uniform(0.5, 1.0, n)
    distance = rng.uniform(0.0, 3.0, n)
    distance[in0[1]] = np.nan  # a row without a distance is never an exemplar
    profiles = cluster_profiles(frame, labels, confidence, distance, FEATURES, "id", K)
    return frame, labels, confidence, distance, profiles


def test_sizes_shares_and_empty_cluster(planted):
    _, labels, confidence, _, profiles = planted
    clusters = profiles.clusters
    assert [c["cluster_id"] for c in clusters] == [0, 1, 2, 3]
    assert [c["size"] for c in clusters] == [*SIZES, 0]
    assert sum(c["share"] for c in clusters) == pytest.approx(1.0)
    assert clusters[1]["share"] == pytest.approx(200 / 600)
    assert clusters[3] == {"cluster_id": 3, "size": 0, "share": 0.0, "mean_confidence": None,
                           "numeric": [], "categories": [], "terms": [], "exemplars": [],
                           "labels": []}
    for c in clusters[:3]:
        assert c["mean_confidence"] == pytest.approx(confidence[labels == c["cluster_id"]].mean())


def test_planted_numeric_feature_ranks_first_with_its_sign(planted):
    frame, labels, _, _, profiles = planted
    top = [c["numeric"][0] for c in profiles.clusters[:3]]
    assert [t["feature"] for t in top] == ["income", "age", "emb[2]"]
    assert 2.5 < top[0]["value"] < 3.5
    assert -3.0 < top[1]["value"] < -2.0
    assert top[2]["value"] > 3.0
    # the age means ignore the nulls
    age = frame["age"].to_numpy()
    assert top[1]["mean_in"] == pytest.approx(np.nanmean(age[labels == 1]))
    assert top[1]["mean_out"] == pytest.approx(np.nanmean(age[labels != 1]))


@pytest.mark.parametrize("column", ["income", "epoch"])
def test_numeric_value_is_the_pooled_standardised_mean_difference(planted, column):
    frame, labels, *_ = planted
    x = frame[column].to_numpy()
    a, b = x[labels == 0], x[labels != 0]
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1))
                     / (len(a) + len(b) - 2))
    profiles = cluster_profiles(*planted[:4], FEATURES, "id", K, top_features=100)
    got = next(f for f in profiles.clusters[0]["numeric"] if f["feature"] == column)
    # rel 1e-4: at 1.7e9 the float64 means of the reference itself are only that exact
    assert got["value"] == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-4)
    assert got["mean_in"] == pytest.approx(a.mean())
    assert got["mean_out"] == pytest.approx(b.mean())


def test_only_planted_differences_are_named(planted):
    # not the constant, not the noise elements of emb, not the elements of a long vector
    *_, profiles = planted
    named = {f["feature"] for c in profiles.clusters for f in c["numeric"]}
    assert named == {"income", "age", "epoch", "emb[2]"}
    assert all(abs(f["value"]) >= 0.2 for c in profiles.clusters for f in c["numeric"])


def test_planted_category_is_over_represented(planted):
    frame, labels, *_, profiles = planted
    cats = profiles.clusters[1]["categories"]
    assert cats[0]["column"] == "city" and cats[0]["category"] == "paris"
    assert cats[0]["lift"] > 2.5
    paris = frame["city"].to_numpy() == "paris"
    assert cats[0]["share_in"] == pytest.approx(paris[labels == 1].mean())
    assert cats[0]["share_overall"] == pytest.approx(paris.mean())
    assert cats[0]["count"] == paris[labels == 1].sum()
    assert all(c["lift"] > 1 for cl in profiles.clusters for c in cl["categories"])
    assert len(cats) <= 3


def test_categories_count_nulls_and_skip_singletons(planted):
    *_, profiles = planted
    in2 = {c["category"] for c in profiles.clusters[2]["categories"]}
    assert {"(null)", SCRIPT} <= in2
    assert all(c["category"] != "tokyo" for cl in profiles.clusters for c in cl["categories"])


def test_planted_term_and_no_stop_words(planted):
    *_, profiles = planted
    terms = profiles.clusters[2]["terms"]
    assert terms[0]["term"] == "refund" and terms[0]["column"] == "note"
    assert terms[0]["share_in"] > 0.5 > 0.1 > terms[0]["share_out"]
    assert all(t["term"] not in ("refund", "the", "was", "a", "about")
               for c in profiles.clusters[:2] for t in c["terms"])


def test_exemplars_are_the_nearest_rows(planted):
    frame, labels, _, distance, profiles = planted
    ids = frame["id"].to_numpy()
    for c in profiles.clusters[:3]:
        rows = np.flatnonzero((labels == c["cluster_id"]) & ~np.isnan(distance))
        expected = ids[rows[np.argsort(distance[rows], kind="stable")[:5]]].tolist()
        assert c["exemplars"] == expected
        assert all(type(e) is int for e in c["exemplars"])


def test_json_round_trip(planted):
    *_, profiles = planted
    data = json.loads(profiles.to_json())
    assert data == profiles.to_dict()
    assert data["n_rows"] == 600 and data["n_clusters"] == K
    assert ClusterProfiles.from_dict(data) == profiles


def test_frame_round_trips_through_parquet(planted, tmp_path):
    *_, profiles = planted
    frame = profiles.to_frame()
    assert list(frame["cluster_id"]) == [0, 1, 2, 3]
    frame.to_parquet(tmp_path / "profiles.parquet")
    back = pd.read_parquet(tmp_path / "profiles.parquet")
    assert back["size"].tolist() == [*SIZES, 0]
    assert np.isnan(back["mean_confidence"].iloc[3])
    assert json.loads(back["categories"].iloc[1]) == profiles.clusters[1]["categories"]
    assert json.loads(back["exemplars"].iloc[0]) == profiles.clusters[0]["exemplars"]


def test_markdown_shows_key_items_and_escapes_user_text(planted):
    *_, profiles = planted
    md = profiles.to_markdown()
    lines = md.strip().splitlines()
    assert len(lines) == 2 + K
    assert re.search(r"\| income \+3\.\dσ", md)
    assert re.search(r"age -2\.\dσ", md)
    assert re.search(r"city=paris ×\d\.\d", md)
    assert "refund" in lines[4]
    assert str(profiles.clusters[0]["exemplars"][0]) in lines[2]
    assert "<script>" not in md and "&lt;script&gt;" in md
    # the '|' inside the category value must not open a new cell
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in lines} == {9}


def test_html_is_an_escaped_table(planted):
    *_, profiles = planted
    page = profiles.to_html()
    assert page.startswith("<table") and page.rstrip().endswith("</table>")
    assert page.count("<tr>") == 1 + K
    assert "<script" not in page and "&lt;script&gt;" in page
    for item in ("income +3.", "city=paris ×", "refund",
                 str(profiles.clusters[0]["exemplars"][0])):
        assert item in page


@pytest.mark.parametrize("change, message", [
    ({"labels": np.array([0, 1, 4])}, r"cluster_id values must be in 0\.\.3"),
    ({"confidence": np.ones(2)}, r"expected one value per row of the frame \(3\)"),
    ({"id_column": "key"}, r"columns missing from the frame: \['key'\]"),
    ({"top_features": -1}, r"top_features=-1"),
])
def test_bad_inputs_are_named(change, message):
    frame = pd.DataFrame({"id": [1, 2, 3], "x": [1.0, 2.0, 3.0]})
    args = {"labels": np.array([0, 1, 1]), "confidence": np.ones(3), "id_column": "id",
            "top_features": 5, **change}
    with pytest.raises(ValueError, match=message):
        cluster_profiles(frame, args["labels"], args["confidence"], np.zeros(3),
                         FeaturesConfig(numeric=["x"]), args["id_column"], K,
                         top_features=args["top_features"])


def test_label_column_names_each_clusters_most_common_truth(planted):
    frame, labels, confidence, distance, without = planted
    truth = np.where(labels == 0, "seven", np.where(labels == 1, "three", None)).astype(object)
    truth[np.flatnonzero(labels == 0)[:30]] = "one"  # cluster 0: 90% seven, 10% one
    frame = frame.assign(digit=truth)
    prof = cluster_profiles(frame, labels, confidence, distance, FEATURES, "id", K,
                            label_column="digit")
    by_id = {c["cluster_id"]: c["labels"] for c in prof.clusters}
    assert by_id[0] == [{"value": "seven", "count": 270, "share": 0.9},
                        {"value": "one", "count": 30, "share": 0.1}]
    assert by_id[1] == [{"value": "three", "count": 200, "share": 1.0}]
    assert by_id[2] == [{"value": None, "count": 100, "share": 1.0}]  # missing is a value
    assert by_id[3] == []  # empty cluster
    assert "| most common label |" in prof.to_markdown().splitlines()[0]
    assert "seven (90%), one (10%)" in prof.to_markdown()
    assert "<th>most common label</th>" in prof.to_html()
    assert json.loads(prof.to_frame()["labels"].iloc[1]) == by_id[1]
    # Without a label column: no such column, and every profile lists none.
    assert all(c["labels"] == [] for c in without.clusters)
    assert "most common label" not in without.to_markdown()
    with pytest.raises(ValueError, match="label column 'truth' missing from the frame"):
        cluster_profiles(frame, labels, confidence, distance, FEATURES, "id", K,
                         label_column="truth")


def test_integer_labels_stay_integers_in_json():
    frame = pd.DataFrame({"id": np.arange(6), "x": np.arange(6.0),
                          "digit": np.array([3, 3, 3, 8, 8, 3], dtype=np.int64)})
    prof = cluster_profiles(frame, np.array([0, 0, 0, 1, 1, 1]), np.ones(6), np.ones(6),
                            FeaturesConfig(numeric=["x"]), "id", 2, label_column="digit")
    assert json.loads(prof.to_json())["clusters"][1]["labels"] == [
        {"value": 8, "count": 2, "share": 2 / 3}, {"value": 3, "count": 1, "share": 1 / 3}]
