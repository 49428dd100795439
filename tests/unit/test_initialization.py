"""The manifold initialisation: several UMAP views, the candidate picked by silhouette."""

import numpy as np
import pytest
import torch

import decflow.model.initialization as init_module
from decflow.model.initialization import (effective_dimension, partition_silhouette,
                                          select_manifold_init, view_dimensions, view_seeds,
                                          view_space)
from decflow.model.nn import ClusteringLayer
from decflow.model.training import dec_loop


def test_view_seeds_keep_the_first_and_derive_distinct_others():
    seeds = view_seeds(7, 5)
    assert seeds[0] == 7
    assert len(set(seeds)) == 5
    assert view_seeds(7, 5) == seeds
    assert view_seeds(8, 5)[1:] != seeds[1:]
    assert view_seeds(None, 3) == [None, None, None]


def test_partition_silhouette_of_one_cluster_is_the_minimum():
    M = np.random.default_rng(0).normal(size=(50, 2))
    assert partition_silhouette(M, np.zeros(50, dtype=int)) == -1.0
    two = np.r_[np.zeros(25), np.ones(25)].astype(int)
    M[25:] += 10
    assert partition_silhouette(M, two) > 0.8


def _blobs(rng, offset):
    centers = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], dtype=float) + offset
    labels = np.repeat(np.arange(4), 40)
    return centers[labels] + rng.normal(scale=0.5, size=(160, 2)), labels


def test_the_candidate_with_the_highest_silhouette_is_kept(monkeypatch):
    """Three views: noise, four clean blobs, noise. The clean view must win whatever its
    position, and the external starts are one more candidate per view."""
    rng = np.random.default_rng(0)
    clean, truth = _blobs(rng, 0)
    views = {0: rng.normal(size=(160, 2)), 1: clean, 2: rng.normal(size=(160, 2))}
    seeds = view_seeds(3, 3)
    monkeypatch.setattr(init_module, "fit_view",
                        lambda Z, k, seed, n_neighbors=20: (None, views[seeds.index(seed)]))
    calls = []

    def external(M):
        calls.append(M)
        return M[np.random.default_rng(len(calls)).choice(len(M), 4, replace=False)]

    Z = np.c_[clean, np.zeros((160, 1))]
    chosen = select_manifold_init(Z, 4, n_views=3, n_init=3, random_state=3,
                                  external_means=external)
    assert len(calls) == 3 and len(chosen.silhouettes) == 6
    # candidates view by view (restarts, then the external start): the clean view 1 wins
    assert chosen.chosen_view == 1 and chosen.chosen // 2 == 1
    assert chosen.silhouettes[chosen.chosen] == max(chosen.silhouettes) > 0.8
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, chosen.resp.argmax(axis=1)) > 0.99
    assert chosen.centers.shape == (4, 3) and chosen.resp.shape == (160, 4)
    assert chosen.view_seeds == seeds
    alone = select_manifold_init(Z, 4, n_views=3, n_init=3, random_state=3)
    assert len(alone.silhouettes) == 3 and alone.chosen == alone.chosen_view == 1


def _spy_views(monkeypatch):
    """Record the rows each UMAP view is fitted on (the real fit runs)."""
    fitted, real = [], init_module.fit_view

    def spy(Z, k, seed, n_neighbors=20):
        fitted.append(len(Z))
        return real(Z, k, seed, n_neighbors)

    monkeypatch.setattr(init_module, "fit_view", spy)
    return fitted


@pytest.mark.slow  # over 3 s on 2 cores
def test_views_fitted_on_a_sample_place_every_row(monkeypatch):
    """600 rows in four blobs, views fitted on 150: every view and external start sees the
    sample only, yet the target and the centroids cover all rows, and the rows outside the
    sample land in their blob's cluster."""
    rng = np.random.default_rng(5)
    centers = np.array([[0, 0, 0], [9, 0, 0], [0, 9, 0], [0, 0, 9]], dtype=np.float32)
    truth = np.repeat(np.arange(4), 150)
    Z = (centers[truth] + rng.normal(scale=0.6, size=(600, 3))).astype(np.float32)
    fitted, starts = _spy_views(monkeypatch), []

    def external(M):
        starts.append(len(M))
        return M[:4]

    chosen = select_manifold_init(Z, 4, n_views=2, n_init=2, random_state=1,
                                  external_means=external, view_rows=150)
    assert fitted == [150, 150] and starts == [150, 150]
    assert chosen.view_rows == 150
    assert chosen.resp.shape == (600, 4) and chosen.resp.dtype == np.float32
    np.testing.assert_allclose(chosen.resp.sum(axis=1), 1, atol=1e-5)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, chosen.resp.argmax(axis=1)) > 0.99
    labels = chosen.resp.argmax(axis=1)
    for j in range(4):  # centroids: the posterior-weighted means of all 600 rows
        np.testing.assert_allclose(chosen.centers[j], Z[labels == j].mean(axis=0), atol=0.05)


def test_a_sample_no_smaller_than_the_rows_changes_nothing(monkeypatch):
    rng = np.random.default_rng(2)
    clean, _ = _blobs(rng, 0)
    Z = np.c_[clean, rng.normal(size=(160, 1))].astype(np.float32)
    fitted = _spy_views(monkeypatch)
    every = select_manifold_init(Z, 4, n_views=2, n_init=2, random_state=4)
    same = select_manifold_init(Z, 4, n_views=2, n_init=2, random_state=4, view_rows=160)
    assert fitted == [160] * 4 and every.view_rows == same.view_rows == 160
    np.testing.assert_array_equal(every.resp, same.resp)
    np.testing.assert_array_equal(every.centers, same.centers)


def test_effective_dimension_counts_the_directions_rows_spread_in():
    rng = np.random.default_rng(0)
    assert effective_dimension(rng.normal(size=(4000, 8))) == pytest.approx(8, rel=0.05)
    line = np.outer(rng.normal(size=500), rng.normal(size=6)) + 1e-6 * rng.normal(size=(500, 6))
    assert effective_dimension(line) == pytest.approx(1, abs=1e-3)
    assert effective_dimension(np.ones((20, 3))) == 1.0
    # 16 columns driven by 3 factors span about 3 directions, whatever their count
    wide = rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 16))
    assert effective_dimension(wide) < 3.01


def test_view_space_takes_the_input_when_the_embedding_would_not_compress():
    assert view_space(2.4, 10) == "input"  # a table of few directions (Dry Bean: 2.4)
    assert view_space(10.0, 10) == "input"
    assert view_space(13.2, 10) == "embedding"  # pixels (digits: 13.2)
    assert view_space(2.4, 10, "embedding") == "embedding"
    assert view_space(13.2, 10, "input") == "input"
    with pytest.raises(ValueError, match="view space 'raw' must be one of"):
        view_space(3.0, 10, "raw")


def test_views_have_k_dimensions_but_no_more_than_the_embedding():
    assert view_dimensions(7, 10) == 7
    assert view_dimensions(26, 10) == 10
    assert view_dimensions(26, 32) == 26


def test_views_of_other_rows_give_centroids_in_z(monkeypatch):
    """The views are fitted on ``views_of`` (here the blobs), the centroids are the
    posterior-weighted means of Z (here another space of the same rows)."""
    rng = np.random.default_rng(3)
    clean, truth = _blobs(rng, 0)
    Z = rng.normal(size=(160, 5)).astype(np.float32) + 3 * truth[:, None]
    fitted = []
    real = init_module.fit_view

    def spy(rows, k, seed, n_neighbors=20):
        fitted.append((rows.shape, k))
        return real(rows, k, seed, n_neighbors)

    monkeypatch.setattr(init_module, "fit_view", spy)
    chosen = select_manifold_init(Z, 4, n_views=2, n_init=2, random_state=0,
                                  views_of=clean, view_dims=3)
    assert fitted == [((160, 2), 3), ((160, 2), 3)]
    from sklearn.metrics import adjusted_rand_score
    labels = chosen.resp.argmax(axis=1)
    assert adjusted_rand_score(truth, labels) > 0.99
    assert chosen.centers.shape == (4, 5)
    for j in range(4):
        np.testing.assert_allclose(chosen.centers[j], Z[labels == j].mean(axis=0), atol=0.05)
    with pytest.raises(ValueError, match="views_of has 10 rows, Z has 160"):
        select_manifold_init(Z, 4, views_of=clean[:10])


def test_view_rows_must_exceed_the_clusters():
    with pytest.raises(ValueError, match=r"view_rows=4 must be at least n_clusters \+ 1 = 5"):
        select_manifold_init(np.zeros((10, 2)), 4, view_rows=4)


def test_n_views_must_be_positive():
    with pytest.raises(ValueError, match="n_views=0 must be >= 1"):
        select_manifold_init(np.zeros((10, 2)), 2, n_views=0)


def _fine_tune(anchor_updates, tol):
    """Two blobs apart along feature 0; the target splits by the sign of feature 1 instead,
    across both blobs. DEC's own target p(q) drifts to the density gap; a target kept
    throughout holds its split."""
    from decflow.model.nn import Autoencoder

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X = torch.randn(96, 6, generator=g)
    X[:, 0] += torch.where(torch.arange(96) % 2 == 0, 4.0, -4.0)
    target = torch.zeros(96, 2)
    target[torch.arange(96), (X[:, 1] > 0).long()] = 1.0
    ae = Autoencoder(6, [64], 2)
    with torch.no_grad():
        z = ae.encode(X)
    centers = torch.stack([z[target[:, j] > 0].mean(0) for j in range(2)])
    result = dec_loop(ae, ClusteringLayer(centers), X, gamma=0.0, update_interval=6, tol=tol,
                     max_iter=600, batch_size=16, lr=1e-3, device=torch.device("cpu"),
                     generator=g, initial_target=target, anchor_updates=anchor_updates)
    agreement = float((result.labels == target.argmax(1)).float().mean())
    return result, agreement


def test_a_target_kept_throughout_is_learned_and_self_training_drops_it():
    kept, kept_agreement = _fine_tune(None, tol=0.001)
    dec, dec_agreement = _fine_tune(1, tol=0.001)
    assert kept_agreement > 0.9
    assert dec_agreement < 0.7


def test_a_kept_target_runs_every_step_and_reports_whether_labels_settled():
    # tol=0.99 stops self-training at its first chance (one update past the anchor); a kept
    # target runs max_iter (600 steps, 6 per update) and reports the last update's change
    kept, _ = _fine_tune(None, tol=0.99)
    dec, _ = _fine_tune(1, tol=0.99)
    assert kept.n_iter == 600 and len(kept.history) == 100 and kept.converged
    assert dec.converged and len(dec.history) == 2
    unsettled, _ = _fine_tune(None, tol=0.0)  # "fewer than none" never holds
    assert unsettled.n_iter == 600 and not unsettled.converged


def test_a_view_fitter_that_stops_early_is_an_error():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(60, 3)).astype(np.float32)

    def two_views(S, k, seeds, n_neighbors):
        for _ in seeds[:2]:
            yield rng.normal(size=(len(S), k)).astype(np.float32), (lambda: None)

    with pytest.raises(RuntimeError, match="fit_views gave 2 views for 3 seeds"):
        select_manifold_init(Z, 3, n_views=3, n_init=1, random_state=0, fit_views=two_views)
