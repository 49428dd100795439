import faulthandler
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest

from testkit import DEC_FAST, DEC_FAST_KMEANS

HERE = Path(__file__).parent
# Folders whose tests are all `slow` (Prefect harness and flows; real servers); in tests/unit
# and tests/data the modules and tests that qualify carry the mark themselves.
SLOW_FOLDERS = (HERE / "flows", HERE / "integration")

# `make test` runs two pytest workers (pytest-xdist, a module per worker at a time): each gets
# one thread for torch, BLAS and numba, so the two do not oversubscribe the cores (with a second
# thread each, the planted-groups runs took 3-4 times as long). Set before anything imports
# torch; child processes (servers, `decflow` commands) inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# The modules that take longest alone (seconds on 2 cores, measured), handed out first so
# that the workers finish together instead of one waiting on a long module picked up last.
# Order only: a stale entry costs time, never a result.
LONGEST_FIRST = [
    "integration/test_operations.py",  # 200 (a minute of it waits for a missed heartbeat)
    "integration/test_nightly_deployment.py",  # 103
    "flows/test_stop_signals.py",  # 110
    "flows/test_first_night.py",  # 120
    "flows/test_process_kills.py",  # 81
    "flows/test_planted_table.py",  # 31 alone, 94 beside another worker
    "unit/test_planted_structure.py",  # 27 alone, 125 beside another worker
    "flows/test_concurrency.py",  # 45
    "unit/test_scoring.py",  # 42
    "integration/test_ui_loopback.py",  # 37
    "flows/test_outage.py",  # 35
    "flows/test_reliability_data.py",  # 35
    "flows/test_backfill.py",  # 35
    "unit/test_compiled_cache.py",  # 29
    "integration/test_no_leaked_secrets.py",  # 27
    "unit/test_dask_worker_faults.py",  # 24
]


def _rank(item) -> int:
    path = item.path.relative_to(HERE).as_posix() if HERE in item.path.parents else ""
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_configure(config):
    # SIGUSR1 dumps every thread's stack, in pytest's process and in each xdist worker:
    # .ci/watch.py sends it when `make test` outlives its limit, so a hang outside any one
    # test's timeout still says where each process stood (C-level: it works while Python is
    # blocked). Output capture is suspended here, so fd 2 is the real stderr, not a test's.
    faulthandler.register(signal.SIGUSR1, file=os.dup(2), all_threads=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if any(folder in item.path.parents for folder in SLOW_FOLDERS):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def blobs():
    """Four well-separated Gaussian blobs in 12-d, 60 rows each."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(4, 12))
    y = np.repeat(np.arange(4), 60)
    X = centers[y] + rng.normal(size=(len(y), 12))
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """A sqlite MLflow store (tracking and registry) per test module: creating its schema takes
    seconds, so a module's tests share one and keep apart by model name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-store') / 'mlflow.db'}"


def _shared_fit(X, **params):
    """A fit shared by the session: tests only read it (one that renumbers, refits or otherwise
    changes an estimator works on its own, e.g. a ``copy.deepcopy``). The teardown checks that
    no test changed it."""
    from decflow import DeepEmbeddedClustering, DegenerateClusterWarning

    with warnings.catch_warnings():  # a tiny fit may leave a small cluster: not what's shared
        warnings.simplefilter("ignore", DegenerateClusterWarning)
        est = DeepEmbeddedClustering(4, random_state=0, **params).fit(X)
    labels, centers = est.labels_.copy(), est.cluster_centers_.copy()
    yield est
    np.testing.assert_array_equal(est.labels_, labels, err_msg="a test changed a shared fit")
    np.testing.assert_array_equal(est.cluster_centers_, centers,
                                  err_msg="a test changed a shared fit")


@pytest.fixture(scope="session")
def dec_on_blobs(blobs):
    """``DeepEmbeddedClustering(4, random_state=0, **DEC_FAST)`` fitted on the blobs (UMAP
    views init), once per session; read only."""
    yield from _shared_fit(blobs[0], **DEC_FAST)


@pytest.fixture(scope="session")
def dec_kmeans_on_blobs(blobs):
    """``DeepEmbeddedClustering(4, random_state=0, **DEC_FAST_KMEANS)`` fitted on the blobs
    (k-means init), once per session; read only."""
    yield from _shared_fit(blobs[0], **DEC_FAST_KMEANS)
