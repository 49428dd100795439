"""Shared test helpers, importable from every test folder (a plain module: `conftest` names
clash between test folders): estimator settings, the tiny source table and pipeline config the
flow tests (and the `sweep-k` command test) run on, and the listening-socket probe."""

import atexit
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from decflow.config import PipelineConfig
from decflow.data.partitioned import write_partition

# DeepEmbeddedClustering settings small enough for a unit test (default init: the UMAP views).
DEC_FAST = dict(n_components=4, hidden=(32, 32), pretrain_epochs=15, max_iter=60, n_init=2,
                init_views=2, batch_size=64)
# The same with the k-means init (no UMAP: numba's first compilation is slow).
DEC_FAST_KMEANS = dict(DEC_FAST, init="k-means")

RUN_DATE = dt.date(2026, 11, 21)
DAYS = [RUN_DATE - dt.timedelta(days=i) for i in (2, 1, 0)]


def make_rows(n: int, start_id: int, seed: int) -> dict:
    """Four blobs: an 8-d vector column, a numeric and a categorical column, the truth."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(42).normal(scale=5.0, size=(4, 8))
    y = rng.integers(0, 4, n)
    vec = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return {"id": np.arange(start_id, start_id + n, dtype=np.int64),
            "emb": [v for v in vec],
            "x": (y * 3.0 + rng.normal(size=n)).astype(np.float64),
            "c": np.array(["abcd"[k] for k in y]),
            "truth": y.astype(np.int64)}


def write_source(uri: str, rows_per_day: int = 90, mutate=None) -> None:
    """Three date partitions; ``mutate(day, columns)`` may corrupt one before writing."""
    for i, day in enumerate(DAYS):
        cols = make_rows(rows_per_day, i * rows_per_day, seed=i)
        if mutate is not None:
            cols = mutate(day, cols)
        arrays = {}
        for k, v in cols.items():
            if k == "emb":
                arrays[k] = pa.array([None if e is None else list(map(float, e)) for e in v],
                                     pa.list_(pa.float32()))
            else:
                arrays[k] = pa.array(v)
        write_partition(uri, "ds", day, pa.table(arrays))


def tiny_config(home, source_uri: str, **sections) -> PipelineConfig:
    data = {
        "home": str(home),
        "source": {"uri": source_uri, "id_column": "id", "label_column": "truth",
                   "window_days": 3},
        "features": {"vector": {"emb": 8}, "numeric": ["x"], "categorical": ["c"],
                     "bounds": {"x": [-100, 100]}},
        "validation": {"min_rows": 20},
        "model": {"n_clusters": 4, "n_components": 4, "hidden": [32, 32], "init_views": 2},
        "train": {"pretrain_epochs": 10, "max_iter": 40, "batch_size": 64,
                  "random_state": 0},
        "kmeans": {"n_init": 3, "chunk_rows": 100},
        "registry": {"model_name": "tiny", "system_metrics_s": 1},
        "compute": {"n_workers": 1, "threads_per_worker": 2, "processes": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    config = PipelineConfig.model_validate(data)
    seed_store(config)
    return config


_EMPTY_STORE: list[Path] = []  # one empty MLflow store per process, made on first use


def seed_store(config: PipelineConfig) -> None:
    """Give the config's home an empty MLflow store (sqlite, schema created) when it has none:
    MLflow creates a new store's schema in 2-3 s, a fifth of a tiny nightly run, and the suite
    makes dozens of homes. The copy is what MLflow would have created (same version, nothing
    in it); tests that build a store from nothing do so without ``tiny_config``."""
    prefix = "sqlite:///"
    uri = config.tracking_uri()
    if not uri.startswith(prefix) or Path(uri[len(prefix):]).exists():
        return
    if not _EMPTY_STORE:
        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="decflow-empty-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        empty = folder / "mlflow.db"
        client = MlflowClient(f"{prefix}{empty}", registry_uri=f"{prefix}{empty}")
        client.search_experiments()  # tracking schema
        client.search_registered_models()  # registry schema (the same file)
        _EMPTY_STORE.append(empty)
    target = Path(uri[len(prefix):])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_STORE[0], target)


def listening(processes) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the psutil ``processes`` listen on."""
    import psutil

    out = set()
    for proc in processes:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


class WebhookReceiver:
    """A webhook on 127.0.0.1 that keeps every JSON body POSTed to it (and its path), for the
    notification tests; ``wait_for(n)`` returns the messages once there are ``n``."""

    def __init__(self, path: str = "/hook") -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.messages: list[dict] = []
        self.paths: list[str] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._changed:
                    receiver.messages.append(json.loads(body))
                    receiver.paths.append(self.path)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        """The messages once there are ``count`` (fails with what came if they do not)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.messages) >= count, timeout)
            assert arrived, f"{len(self.messages)} of {count} messages in {timeout} s: " \
                            f"{self.messages}"
            return list(self.messages)

    def close(self) -> None:
        self.server.shutdown()
