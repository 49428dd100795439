"""The nightly's initial centroids over Dask: k-means on z, or the manifold init with one Dask
k-means per view, and what each reports."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from decflow.config import ComputeConfig, PipelineConfig
from decflow.engine import centroids
from decflow.engine.compute import dask_client
from decflow.model.building import estimator_from_config

pytestmark = pytest.mark.slow  # a Dask cluster


@pytest.fixture(scope="module")
def three_blobs():
    X, y = make_blobs(n_samples=600, centers=3, n_features=8, cluster_std=0.6, random_state=0)
    return X.astype(np.float32), y


def _fit(X, init: str):
    config = PipelineConfig(model={"n_clusters": 3, "n_components": 3, "hidden": [16],
                                   "init": init, "init_views": 2, "init_view_rows": 300},
                            train={"pretrain_epochs": 2, "random_state": 0})
    est = estimator_from_config(config)
    est.pretrain(X)
    return est, config


@pytest.mark.parametrize("init", ["k-means", "manifold"])
def test_initial_centroids_separate_the_blobs(three_blobs, init):
    X, y = three_blobs
    est, config = _fit(X, init)
    with dask_client(ComputeConfig(n_workers=1, threads_per_worker=1, processes=False)) as c:
        got = centroids.init_centroids(est, X, config, c)
    assert got.centers.shape == (3, 3)
    Z = est.transform(X)
    nearest = ((Z[:, None, :] - got.centers[None]) ** 2).sum(-1).argmin(1)
    assert adjusted_rand_score(y, nearest) > 0.9
    assert {"kmeans_inertia", "kmeans_n_iter", "seconds_init"} <= set(got.metrics)
    if init == "manifold":
        assert got.target.shape == (600, 3)
        np.testing.assert_allclose(got.target.sum(1), 1.0, rtol=1e-5)
        # three blobs span ~1.6 directions of the scaled input (<= n_components): views of it
        assert got.view_space == "input" and got.metrics["input_dimension"] < 3
        assert got.metrics["init_candidate"] >= 0 and got.metrics["init_view_rows"] == 300
    else:
        assert got.target is None and got.view_space is None


def test_views_fitted_on_the_workers_are_the_views_fitted_here(three_blobs):
    """``fit_views_on``: each view is a task on a worker process, and the candidates, the
    choice and the placed rows are exactly those of the views fitted in this process."""
    import functools

    import distributed

    from decflow.model.initialization import select_manifold_init

    X, _ = three_blobs
    kwargs = dict(n_views=3, n_init=2, random_state=0, view_rows=300, view_dims=3)
    here = select_manifold_init(X, 3, **kwargs)
    with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1)) as client:
        with distributed.get_task_stream(client) as stream:
            there = select_manifold_init(
                X, 3, fit_views=functools.partial(centroids.fit_views_on, client), **kwargs)
        fits = [t for t in stream.data if str(t["key"]).startswith("umap-view-")]
        workers = {w for w in client.scheduler_info()["workers"]}
    assert len(fits) == 3 and {t["worker"] for t in fits} <= workers
    assert there.silhouettes == here.silhouettes and there.chosen == here.chosen
    assert there.chosen_view == here.chosen_view and there.view_rows == 300
    np.testing.assert_array_equal(there.resp, here.resp)  # the 300 placed rows included
    np.testing.assert_array_equal(there.centers, here.centers)


def test_two_views_on_one_worker_process_do_not_kill_it(three_blobs, monkeypatch):
    """A worker with 2 threads runs 2 view fits at once. numba's "workqueue" threading layer
    (the one left where neither TBB nor OpenMP is installed, as in a slim image) aborts the
    process when two threads enter parallel compiled code at once: every attempt killed its
    worker (KilledWorker). UMAP calls in one process take turns."""
    import functools

    from decflow.model.initialization import select_manifold_init

    monkeypatch.setenv("NUMBA_THREADING_LAYER", "workqueue")  # inherited by the workers
    X, _ = three_blobs
    kwargs = dict(n_views=2, n_init=1, random_state=0, view_dims=3)
    with dask_client(ComputeConfig(n_workers=1, threads_per_worker=2)) as client:
        layer = client.run(lambda: __import__("os").environ["NUMBA_THREADING_LAYER"])
        there = select_manifold_init(
            X, 3, fit_views=functools.partial(centroids.fit_views_on, client), **kwargs)
    assert list(layer.values()) == ["workqueue"]
    assert there.silhouettes == select_manifold_init(X, 3, **kwargs).silhouettes


def test_the_rows_outside_the_sample_are_placed_in_blocks_on_every_worker(three_blobs,
                                                                          monkeypatch):
    """The chosen view places the other rows block by block (``initialization.place_rows``);
    on a cluster the blocks run on all workers, and every placed row equals the one placed
    here."""
    import functools

    import distributed

    from decflow.model import initialization
    from decflow.model.initialization import select_manifold_init

    monkeypatch.setattr(initialization, "PLACE_ROWS", 60)  # 300 rows outside: 5 blocks
    X, _ = three_blobs
    kwargs = dict(n_views=2, n_init=1, random_state=0, view_rows=300, view_dims=3)
    here = select_manifold_init(X, 3, **kwargs)
    with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1)) as client:
        with distributed.get_task_stream(client) as stream:
            there = select_manifold_init(
                X, 3, fit_views=functools.partial(centroids.fit_views_on, client), **kwargs)
    blocks = [t for t in stream.data if str(t["key"]).startswith("_transform_block")]
    assert len(blocks) == 5 and len({t["worker"] for t in blocks}) == 2
    np.testing.assert_array_equal(there.resp, here.resp)
    np.testing.assert_array_equal(there.centers, here.centers)


def test_each_view_s_kmeans_finds_a_free_worker(three_blobs, monkeypatch):
    """One view fits per worker at a time, and the next starts only once the last view's Dask
    k-means has run: with every view submitted at once, both workers went from one fit to the
    next, and each k-means (and the coordinates) waited behind a whole view."""
    X, _ = three_blobs
    est, config = _fit(X, "manifold")
    config = config.model_copy(update={"model": config.model.model_copy(
        update={"init_views": 4})})
    busy, kmeans = [], centroids.kmeans_dask

    def recording(space, k, *, client, **kwargs):
        views = [key for keys in client.processing().values() for key in keys
                 if str(key).startswith("umap-view-")]
        busy.append(len(views))
        return kmeans(space, k, client=client, **kwargs)

    monkeypatch.setattr(centroids, "kmeans_dask", recording)
    with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1)) as client:
        got = centroids.init_centroids(est, X, config, client)
    assert len(busy) == 4 and max(busy) <= 1, busy  # a worker always free for the k-means
    assert got.target.shape == (600, 3) and got.metrics["init_candidate"] >= 0


def test_a_fitted_view_is_not_changed_by_pickling_it_for_another_worker():
    """The chosen view's fit is sent to the other workers to place their blocks while its
    own worker places one. pynndescent builds its search index in place on the first
    transform, or when pickled: a copy pickled while the holder transformed was half-built
    (AttributeError: 'NNDescent' object has no attribute '_rp_forest', the nightly hung). A
    fit that comes out of the task is already built, so pickling it changes nothing."""
    import pickle

    rng = np.random.default_rng(0)
    # from 4,096 rows UMAP builds a pynndescent index (below: exact neighbours, no index)
    S = (rng.normal(size=(5, 4))[rng.integers(0, 5, 4200)] * 4
         + rng.normal(size=(4200, 4))).astype(np.float32)
    reducer, M = centroids._fit_view(S, 3, 0, 10)
    index = reducer._knn_search_index
    before = set(vars(index))
    pickle.dumps(reducer)
    assert set(vars(index)) == before
    copy = pickle.loads(pickle.dumps(reducer))
    np.testing.assert_array_equal(copy.transform(S[:50]), reducer.transform(S[:50]))
