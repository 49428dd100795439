"""One Dask worker SIGKILLed in the middle of k-means (seeding, Lloyd) and of scoring:
the results equal those of a run without the kill.

A worker plugin kills a worker process the moment a chosen task changes state there; a marker
file created with O_EXCL makes it exactly one kill per test (the nanny restarts the worker, and
the plugin on the new one finds the marker). No sleeps, no timing.
"""

import datetime as dt
import os
import signal
import time
from pathlib import Path

import dask
import distributed
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decflow import DeepEmbeddedClustering
from decflow.config import ComputeConfig, PipelineConfig
from decflow.data import partitioned, sources
from decflow.engine import kmeans as dask_kmeans
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import _MODELS as payload_cache, scatter_model
from decflow.engine.kmeans import kmeans_dask, predict_dask
from decflow.model.features import FeatureEncoder
from testkit import DEC_FAST_KMEANS

pytestmark = pytest.mark.slow  # Dask clusters whose workers it kills

N_ROWS, CHUNK = 4000, 500  # k-means: 8 row partitions
DAY = dt.date(2026, 11, 21)
SCORE_ROWS, GROUP = 1200, 100  # scoring: 6 chunks of two row groups
LABEL_COLUMNS = ["id", "cluster_id", "confidence", "distance"]


def _claim(marker: str, note: str) -> bool:
    """True for the one caller that creates the marker file."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, note.encode())
    os.close(fd)
    return True


class KillAtStart(distributed.WorkerPlugin):
    """SIGKILL this worker as its ``nth`` task named ``prefix...`` starts executing."""

    def __init__(self, marker: str, prefix: str, nth: int):
        self.marker, self.prefix, self.nth = marker, prefix, nth

    def setup(self, worker):
        self.started = 0

    def transition(self, key, start, finish, **kwargs):
        name = str(key[0] if isinstance(key, tuple) else key)
        if finish == "executing" and name.startswith(self.prefix):
            self.started += 1
            if self.started == self.nth and _claim(self.marker, f"{os.getpid()} {name}"):
                os.kill(os.getpid(), signal.SIGKILL)


class KillHolderAtFetch(distributed.WorkerPlugin):
    """SIGKILL ``holder``, the one worker holding the model payload ``key``, as the first chunk
    task starts on any worker: no worker has the model yet (the caches were cleared), so every
    chunk must fetch the payload, which only its task's rerun can give."""

    def __init__(self, marker: str, key: str, holder: str):
        self.marker, self.key, self.holder = marker, key, holder

    def setup(self, worker):
        self.worker = worker
        Path(self._pid_file(worker.address)).write_text(str(os.getpid()))

    def _pid_file(self, address: str) -> str:
        return f"{self.marker}.pid-{address.replace('/', '').replace(':', '-')}"

    def transition(self, key, start, finish, **kwargs):
        name = str(key[0] if isinstance(key, tuple) else key)
        if finish == "executing" and name.startswith("process_chunk"):
            pid = int(Path(self._pid_file(self.holder)).read_text())
            if _claim(self.marker, f"{pid} fetch of {self.key} from {self.holder}"):
                os.kill(pid, signal.SIGKILL)


WORKER_TIMEOUT = 300  # s: a restarted worker imports torch and the scoring modules again


def _live_worker_pids(client, gone: int) -> set[int]:
    """The pids of two live workers once the scheduler has dropped the killed one (``gone``)
    and the nanny's replacement has registered. Until then the scheduler may still list the
    dead worker (a broadcast to it fails with CommClosedError), so poll, with a deadline."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while True:
        nannies = client.cluster.workers  # the embedded cluster's nannies, by worker name
        assert len(nannies) == 2, f"the cluster closed a nanny, left: {sorted(nannies)}"
        pids = set(client.run(os.getpid, on_error="ignore").values())
        if len(pids) == 2 and gone not in pids:
            return pids
        assert time.monotonic() < deadline, f"workers after the kill: {pids}"
        time.sleep(0.2)  # polling interval of a readiness check with a deadline


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes under nannies (which restart a killed worker)."""
    with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1, processes=True)) as c:
        yield c


@pytest.fixture
def kill(client, tmp_path):
    """``kill(plugin_cls, *args)`` registers ``plugin_cls(marker, *args)`` on every worker and
    returns ``killed()``, which asserts one worker was killed and a fresh one replaced it and
    returns the marker's note. The plugin is removed afterwards."""
    marker = str(tmp_path / "kill-marker")
    before = {}

    def arm(plugin_cls, *args):
        _live_worker_pids(client, gone=-1)
        before.update(client.run(os.getpid, on_error="ignore"))
        client.register_plugin(plugin_cls(marker, *args), name="kill-once")
        armed.append(plugin_cls)

        def killed() -> str:
            assert os.path.exists(marker), f"no worker was killed by {plugin_cls.__name__}{args}"
            pid, note = Path(marker).read_text().split(" ", 1)
            after = _live_worker_pids(client, gone=int(pid))
            assert int(pid) in before.values() and int(pid) not in after
            assert len(after) == 2 and len(after - set(before.values())) == 1
            return note
        return killed

    armed = []
    yield arm
    if armed:
        client.unregister_worker_plugin("kill-once")


# --- k-means --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def X():
    """Five overlapping blobs in 8-d: several Lloyd passes before convergence."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(5, 8))
    y = rng.integers(0, 5, N_ROWS)
    return (centers[y] + rng.normal(size=(N_ROWS, 8))).astype(np.float32)


def _kmeans(client, X):
    res = kmeans_dask(X, 5, client=client, n_init=3, chunk_rows=CHUNK, tol=0.0,
                      random_state=0)
    return res, predict_dask(X, res.cluster_centers, client=client, chunk_rows=CHUNK)


@pytest.fixture(scope="module")
def kmeans_reference(client, X):
    return _kmeans(client, X)


@pytest.mark.parametrize("prefix", ["_seed_min_d2", "_lloyd_block"])
def test_kmeans_with_a_worker_killed_gives_the_same_centres_and_labels(
        client, X, kmeans_reference, kill, monkeypatch, prefix):
    """Killed as the worker starts its 9th such task: no worker runs more than the 8
    partitions' tasks in one pass, so the kill falls in the 2nd seeding round or Lloyd pass
    or later. Every shared argument (candidates, centres) goes through the cluster too."""
    ref, ref_labels = kmeans_reference
    assert ref.n_iter >= 3
    monkeypatch.setattr(dask_kmeans, "_INLINE_BYTES", 0)
    killed = kill(KillAtStart, prefix, N_ROWS // CHUNK + 1)
    res, labels = _kmeans(client, X)
    assert killed().startswith(prefix)
    np.testing.assert_array_equal(res.cluster_centers, ref.cluster_centers)
    assert res.inertias == ref.inertias and res.n_iter == ref.n_iter
    np.testing.assert_array_equal(labels, ref_labels)


# --- scoring --------------------------------------------------------------------------------------

def _config(tmp_path) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "home": str(tmp_path / "home"),
        "source": {"uri": str(tmp_path / "source"), "window_days": 1},
        "features": {"numeric": ["x", "y"], "vector": {"v": 3}},
        "validation": {"min_rows": 10},
        "compute": {"chunk_rows": 2 * GROUP, "batch_rows": 80}})


def _write_source(root) -> None:
    """Three blobs in (x, y) plus a 3-vector, one partition in row groups of ``GROUP`` rows."""
    rng = np.random.default_rng(0)
    xy = np.repeat([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], SCORE_ROWS // 3, axis=0)
    xy += rng.normal(size=xy.shape)
    vec = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.normal(size=SCORE_ROWS * 3).astype(np.float32)), 3).cast(
        pa.list_(pa.float32()))
    part = root / f"ds={DAY}"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"id": np.arange(SCORE_ROWS), "x": xy[:, 0], "y": xy[:, 1],
                             "v": vec}), part / "part-0.parquet", row_group_size=GROUP)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    _write_source(root / "source")
    frame, _ = sources.load_window(_config(root).source, DAY)
    encoder = FeatureEncoder(_config(root).features)
    # any model will do (the test compares scoring with and without a kill): a quick one
    fast = {**DEC_FAST_KMEANS, "pretrain_epochs": 5, "max_iter": 10}
    return encoder, DeepEmbeddedClustering(3, **fast).fit(encoder.fit_transform(frame[::4]))


def _label(client, root, model, before_scoring=lambda payload: None) -> pd.DataFrame:
    """Label the partition through ``scoring.label_partition``; its labels as written."""
    config = _config(root)
    _write_source(root / "source")
    scan = sources.scan_window(config.source, DAY)
    assert len(scan.chunks(config.compute.chunk_rows)) == SCORE_ROWS // (2 * GROUP)
    spec = scoring.LabelsSpec("m", "1", "run", dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc))
    payload = scatter_model(client, model)
    before_scoring(payload)
    out = scoring.label_partition(client, scan, config, payload, spec)
    assert out.validation_result.success and out.rows_written == SCORE_ROWS
    return partitioned.read_partition(config.labels_uri(), "ds", DAY)[LABEL_COLUMNS]


@pytest.fixture(scope="module")
def labels_reference(client, model, tmp_path_factory):
    labels = _label(client, tmp_path_factory.mktemp("reference"), model)
    assert labels["cluster_id"].nunique() == 3 and labels["id"].tolist() == list(range(SCORE_ROWS))
    return labels


@pytest.mark.parametrize("moment", ["chunk-start", "model-fetch"])
def test_scoring_with_a_worker_killed_writes_the_same_labels(client, tmp_path, model,
                                                             labels_reference, kill, moment):
    """chunk-start: killed as its 2nd chunk starts on a worker, some labels already written.
    model-fetch: the model held by one worker only (chunk tasks fetch it themselves when their
    worker has not built it yet; Dask's active memory manager would leave one copy anyway) and
    that worker killed as the first chunk starts, before any worker has built the model: a
    scattered model was lost then; the payload task is recomputed.
    Either way the labels (id, cluster, confidence, distance) equal those of a run without
    the kill, row for row."""
    killed = None

    def arm(payload):
        nonlocal killed
        if moment == "chunk-start":
            killed = kill(KillAtStart, "process_chunk", 2)
            return
        distributed.wait(payload)
        client.amm.run_once()
        holders = client.who_has([payload])[payload.key]
        assert len(holders) == 1
        client.run(payload_cache.clear)  # every worker fetches the payload
        killed = kill(KillHolderAtFetch, payload.key, holders[0])

    labels = _label(client, tmp_path, model, before_scoring=arm)
    killed()
    pd.testing.assert_frame_equal(labels, labels_reference)


# --- the embedded cluster itself ------------------------------------------------------------------

def test_a_killed_worker_restarts_even_when_the_lost_worker_timer_fires_meanwhile():
    """Dask's SpecCluster closes the nanny of a worker still missing ``lost-worker-timeout``
    (15 s) after it was lost, unless a worker of that name has registered again. A worker
    killed twice about 15 s apart is restarting when the first loss's timer fires: the nanny
    was closed mid-restart and the cluster went on with one worker (seen once in CI, in the
    model-fetch test above). A timeout of 0 s fires that timer during every restart."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0s"}):
        with dask_client(ComputeConfig(n_workers=2, threads_per_worker=1,
                                       processes=True)) as c:
            pids = c.run(os.getpid)
            _live_worker_pids(c, gone=-1)
            victim = min(pids.values())
            os.kill(victim, signal.SIGKILL)  # a local process: the embedded cluster's worker
            after = _live_worker_pids(c, gone=victim)
            assert len(after - set(pids.values())) == 1
        # the caller's own Dask settings are back once the cluster is gone
        assert dask.config.get("distributed.deploy.lost-worker-timeout") == "0s"
