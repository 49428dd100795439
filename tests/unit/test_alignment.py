"""Stable cluster ids: Hungarian matching of a new labeling onto the champion's."""

import warnings

import numpy as np
import pytest

from decflow import DeepEmbeddedClustering, DegenerateClusterWarning
from decflow.model.alignment import align_clusters, co_assignment, label_churn, match_clusters
from testkit import DEC_FAST_KMEANS



def test_permuted_labels_are_aligned_exactly():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 5, 500)
    perm = np.array([3, 0, 4, 1, 2])  # reference cluster r is called perm[r] by the new model
    labels = perm[reference]
    order = match_clusters(labels, reference, 5)
    np.testing.assert_array_equal(order, perm)  # new id j is old id order[j] = perm[j]
    np.testing.assert_array_equal(np.argsort(order)[labels], reference)
    assert label_churn(labels, reference) > 0.5
    assert label_churn(np.argsort(order)[labels], reference) == 0.0


def test_noisy_relabelling_keeps_the_majority_match():
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 4, 1000)
    labels = np.array([2, 3, 1, 0])[reference]
    flip = rng.random(1000) < 0.15
    labels[flip] = rng.integers(0, 4, flip.sum())
    aligned = np.argsort(match_clusters(labels, reference, 4))[labels]
    assert label_churn(aligned, reference) < 0.15


def test_more_clusters_than_the_champion_keep_matched_ids_and_fill_the_rest():
    reference = np.repeat([0, 1, 2], 100)
    # New model: reference 0 -> id 4, reference 1 split into ids 0 (70 rows) and 2 (30),
    # reference 2 -> id 1, id 3 picks up nothing.
    labels = np.concatenate([np.full(100, 4), np.full(70, 0), np.full(30, 2), np.full(100, 1)])
    order = match_clusters(labels, reference, 5, 3)
    assert sorted(order) == list(range(5))
    new_id = np.argsort(order)
    assert new_id[4] == 0 and new_id[0] == 1 and new_id[1] == 2
    # unmatched old ids 2 and 3 fill ids 3 and 4 in their old order
    assert new_id[2] == 3 and new_id[3] == 4


def test_fewer_clusters_than_the_champion_keep_the_ids_that_exist():
    reference = np.repeat([0, 1, 2, 3], [60, 40, 50, 50])
    # New model merges reference 0 (60 rows) and 1 (40) into old id 2; reference 2 -> 0;
    # reference 3 -> 1.
    labels = np.concatenate([np.full(100, 2), np.full(50, 0), np.full(50, 1)])
    order = match_clusters(labels, reference, 3, 4)
    new_id = np.argsort(order)
    # old 0 takes id 2 (kept); old 2 pairs with reference 0, the larger part it merged, and
    # keeps id 0; old 1 pairs with reference 3, which does not exist for k=3, so it takes the
    # free id 1.
    assert new_id.tolist() == [2, 1, 0]


def test_co_assignment_and_bad_input():
    table = co_assignment([0, 0, 1], [1, 1, 0], 2, 2)
    np.testing.assert_array_equal(table, [[0, 2], [1, 0]])
    with pytest.raises(ValueError, match="same non-empty rows"):
        match_clusters([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"reference must lie in 0\.\.1"):
        match_clusters([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="integer"):
        match_clusters([0.0, 1.0], [0, 1], 2)


def test_retraining_with_another_seed_keeps_cluster_ids_after_alignment(blobs,
                                                                       dec_kmeans_on_blobs):
    X, _ = blobs
    champion = dec_kmeans_on_blobs  # DeepEmbeddedClustering(4, random_state=0, **DEC_FAST_KMEANS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateClusterWarning)
        new = DeepEmbeddedClustering(4, random_state=1, **DEC_FAST_KMEANS).fit(X)
    before = new.predict(X)
    result = align_clusters(new, X, champion.predict(X))
    after = new.predict(X)
    # The estimator itself was renumbered: the same partition, the champion's ids.
    np.testing.assert_array_equal(after, np.argsort(result.order)[before])
    np.testing.assert_array_equal(new.labels_, after)
    assert result.label_churn == pytest.approx(label_churn(after, champion.predict(X)))
    assert result.label_churn < 0.1
    assert result.label_churn <= result.label_churn_unaligned
    assert result.label_churn_unaligned > 0.4  # this seed numbers the blobs differently
    assert result.kept == [0, 1, 2, 3]
    assert result.to_dict()["mapping"] == {str(o): j for j, o in enumerate(result.order)}
