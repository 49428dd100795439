import socket
import time

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from decflow.config import ComputeConfig
from decflow.engine import kmeans as dask_kmeans
from decflow.engine.compute import dask_client
from decflow.engine.kmeans import KMeansResult, kmeans_dask, predict_dask


@pytest.fixture(scope="module")
def client():
    with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1, processes=False)) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    return StandardScaler().fit_transform(load_digits().data).astype(np.float32)


@pytest.fixture(scope="module")
def digits_result(client, digits):
    return kmeans_dask(digits, 10, client=client, n_init=10, chunk_rows=300, random_state=0)


@pytest.mark.slow  # a Dask cluster
def test_partitions_are_bounded_by_chunk_rows(client, digits):
    blocks = dask_kmeans._partition_rows(digits, client, 300)
    sizes = [len(b) for b in client.gather(blocks)]
    assert sizes == [300] * 5 + [297]
    blocks = dask_kmeans._partition_rows(da.from_array(digits, chunks=(1000, 32)), client, 300)
    parts = client.gather(blocks)
    assert len(parts) > 1 and max(len(p) for p in parts) <= 300
    np.testing.assert_array_equal(np.concatenate(parts), digits)


@pytest.mark.slow  # a Dask cluster
def test_digits_inertia_matches_sklearn(digits, digits_result):
    km = KMeans(n_clusters=10, n_init=10, random_state=0).fit(digits)
    assert digits_result.inertia <= 1.01 * km.inertia_
    assert isinstance(digits_result, KMeansResult)
    assert digits_result.cluster_centers.shape == (10, 64)
    assert digits_result.cluster_centers.dtype == np.float32
    assert len(digits_result.inertias) == 10
    assert digits_result.inertia == min(digits_result.inertias)
    assert 1 <= digits_result.n_iter <= 300


@pytest.mark.slow  # a Dask cluster
def test_inertia_is_the_inertia_of_the_returned_centres(digits, digits_result):
    C = digits_result.cluster_centers.astype(np.float64)
    d2 = ((digits[:, None, :].astype(np.float64) - C[None]) ** 2).sum(-1).min(1).sum()
    assert digits_result.inertia == pytest.approx(d2, rel=1e-6)


@pytest.mark.slow  # a Dask cluster
def test_same_random_state_same_centres(client, digits, digits_result):
    again = kmeans_dask(digits, 10, client=client, n_init=10, chunk_rows=300, random_state=0)
    np.testing.assert_array_equal(again.cluster_centers, digits_result.cluster_centers)
    assert again.inertias == digits_result.inertias


@pytest.mark.slow  # a Dask cluster
def test_blobs_recovered_exactly(client, blobs):
    X, y = blobs
    res = kmeans_dask(X, 4, client=client, n_init=10, chunk_rows=64, random_state=1)
    km = KMeans(n_clusters=4, n_init=10, random_state=0).fit(X)
    assert res.inertia <= 1.01 * km.inertia_
    labels = predict_dask(X, res.cluster_centers, client=client, chunk_rows=64)
    assert adjusted_rand_score(y, labels) == 1.0


@pytest.mark.slow  # a Dask cluster
def test_dask_array_input_gives_the_numpy_result(client, blobs):
    X, _ = blobs
    a = kmeans_dask(X, 4, client=client, n_init=3, chunk_rows=64, random_state=3)
    b = kmeans_dask(da.from_array(X, chunks=(100, 5)), 4, client=client, n_init=3,
                    chunk_rows=64, random_state=3)
    np.testing.assert_array_equal(a.cluster_centers, b.cluster_centers)


@pytest.mark.slow  # a Dask cluster
def test_predict_equals_numpy_argmin(client, blobs, monkeypatch):
    X, _ = blobs
    C = np.random.default_rng(0).normal(scale=6.0, size=(5, X.shape[1])).astype(np.float32)
    expected = ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
    labels = predict_dask(X, C, client=client, chunk_rows=50)
    assert labels.dtype == np.int64 and labels.shape == (len(X),)
    np.testing.assert_array_equal(labels, expected)
    # Tiny sub-blocks inside each task (threads share the module, so the patch reaches them).
    monkeypatch.setattr(dask_kmeans, "_BLOCK_ELEMS", 16)
    np.testing.assert_array_equal(predict_dask(X, C, client=client, chunk_rows=50), expected)


@pytest.mark.slow  # a Dask cluster
def test_as_many_clusters_as_rows(client):
    X = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    res = kmeans_dask(X, 12, client=client, n_init=2, chunk_rows=5, random_state=0)
    assert res.inertia == pytest.approx(0.0, abs=1e-9)
    assert len(np.unique(res.cluster_centers, axis=0)) == 12


@pytest.mark.slow  # a Dask cluster
def test_fewer_distinct_points_than_clusters(client):
    X = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    res = kmeans_dask(X, 5, client=client, n_init=2, chunk_rows=7, random_state=0)
    assert res.inertia == pytest.approx(0.0, abs=1e-9)


def test_empty_cluster_takes_the_farthest_point():
    old = np.array([[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]])
    sums = np.array([[1.0, 1.0], [20.0, 20.0], [0.0, 0.0]])  # cluster 0: (0,0),(1,1); 1: 2x(10,10)
    counts = np.array([2, 2, 0])
    far_d2 = np.array([2.0, 0.0])  # (1,1) is farthest from its centre
    new = dask_kmeans._update_centers(old, sums, counts, far_d2, np.array([0, 1]),
                                      np.array([[1.0, 1.0], [10.0, 10.0]]))
    np.testing.assert_allclose(new, [[0.0, 0.0], [10.0, 10.0], [1.0, 1.0]])


@pytest.mark.slow  # a Dask cluster
@pytest.mark.parametrize(("X", "k", "match"), [
    (np.zeros((5, 2), np.float32), 0, "n_clusters=0 should be an integer >= 1"),
    (np.zeros((5, 2), np.float32), 6, r"n_samples=5 should be >= n_clusters=6"),
    (np.zeros(5, np.float32), 2, r"X must be 2-D .* got shape \(5,\)"),
    (np.zeros((2, 3, 4), np.float32), 2, r"X must be 2-D .* got shape \(2, 3, 4\)"),
    (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), 2, "NaN or infinity in 1 of 3 rows"),
    (np.array([[0.0, 1.0], [np.inf, 1.0], [2.0, 2.0]]), 2, "NaN or infinity in 1 of 3 rows"),
])
def test_bad_input_is_named(client, X, k, match):
    with pytest.raises(ValueError, match=match):
        kmeans_dask(X, k, client=client, chunk_rows=2)


@pytest.mark.slow  # a Dask cluster
def test_bad_parameters_are_named(client, blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="n_init=0"):
        kmeans_dask(X, 2, client=client, n_init=0)
    with pytest.raises(ValueError, match="tol=-1"):
        kmeans_dask(X, 2, client=client, tol=-1)
    with pytest.raises(ValueError, match="X has 12 features but centers have 3"):
        predict_dask(X, np.zeros((2, 3)), client=client)
    with pytest.raises(ValueError, match="NaN or infinity in 1 rows"):
        predict_dask(np.array([[0.0], [np.nan]]), np.zeros((2, 1)), client=client)


def test_bad_address_fails_fast_and_names_it():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=address):
        with dask_client(ComputeConfig(dask_address=address), timeout=1):
            pass
    assert time.monotonic() - start < 10


@pytest.mark.slow  # a Dask cluster
def test_blas_threads_restored_after_tasks(client, blobs):
    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    predict_dask(blobs[0], blobs[0][:3], client=client, chunk_rows=50)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before
