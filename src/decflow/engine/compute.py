"""Where distributed work runs: a Dask client for an existing scheduler or an embedded
LocalCluster, and one cluster shared by every step of a command (``run_cluster``)."""

import asyncio
import ctypes
import functools
import importlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dask
import distributed
from threadpoolctl import ThreadpoolController

from decflow.config import ComputeConfig
from decflow.environment import end_without_a_final_collection
from decflow.redaction import redact

_log = logging.getLogger(__name__)
# what a worker imports before its first task (see WarmUp); every kind unless a command says
WARM_ALL = ("validation", "scoring", "training")
WARM_SCORING = ("validation", "scoring")  # a run that labels with a registered model


@contextmanager
def dask_client(compute: ComputeConfig, *, timeout: float = 15.0) -> Iterator[distributed.Client]:
    """A Dask client, closed (with its embedded cluster, if any) on exit.

    Inside ``run_cluster`` with the same settings: the run's shared client, left open on exit
    (its first user waits for it to start). Otherwise, ``compute.dask_address`` set: connect
    to that scheduler; not set: start an embedded ``LocalCluster(n_workers,
    threads_per_worker, processes)`` on loopback, its dashboard on a free loopback port.
    Either way the cluster and its dashboard address are logged (INFO,
    ``decflow.engine.compute``: printed by every command), and every worker, one that joins
    or restarts later included, imports what decflow's tasks use before its first task
    (``WarmUp``). The client becomes the default Dask scheduler.

    Args:
        compute: the compute section of the pipeline config.
        timeout: seconds to wait for the scheduler before giving up.

    Raises:
        ConnectionError: the scheduler at ``compute.dask_address`` could not be reached
            (the message names the address).
    """
    shared = _SHARED.get(_cluster_key(compute))
    if shared is not None:
        yield shared.wait()
        return
    with _open_client(compute, timeout=timeout) as client:
        warm_workers(client, WARM_ALL)
        yield client


@contextmanager
def run_cluster(compute: ComputeConfig, *, warm: tuple[str, ...] = WARM_ALL,
                timeout: float = 15.0) -> Iterator[None]:
    """One Dask cluster for every step of a command: each ``dask_client(compute)`` inside
    (from any thread) gets the same client, and the cluster closes when the outermost
    ``run_cluster`` of these settings exits.

    The cluster starts in a background thread; entry returns once its worker processes are
    spawned (this process's environment is its own again, see ``_own_environ``), and their
    warm-up runs while the caller goes on (the CLI imports the flow and Prefect starts its
    server meanwhile). A start-up error, if any (``ConnectionError`` for an unreachable
    ``compute.dask_address``, the error of a worker that failed to warm up), is raised by the
    first ``dask_client``, in the step that needed the cluster. Before any task runs, every
    worker imports what the run's tasks use (``warm``, see ``WarmUp``: "validation" the
    expectation suite's libraries and its Great Expectations context, "scoring" torch and the
    model code, "training" k-means and UMAP), so no task pays for it and no two threads of a
    worker import at once. Nested ``run_cluster`` calls with the same settings share it.
    """
    key = _cluster_key(compute)
    with _SHARED_LOCK:
        shared = _SHARED.get(key)
        if shared is None:
            if not compute.dask_address:  # what the cluster's start imports, imported here
                _import_cluster_modules()
                if not compute.processes:  # its workers are this process's threads
                    try:
                        warm_worker(warm)
                    except ImportError:  # the workers' warm-up fails the same way, where
                        pass             # a step needs the cluster (see the docstring)
            shared = _SHARED[key] = _Shared(compute, timeout, warm)
        shared.users += 1
    shared.spawned.wait()  # see _Shared._hold: this process's environment is its own again
    try:
        yield
    finally:
        with _SHARED_LOCK:
            shared.users -= 1
            last = shared.users == 0
            if last:
                del _SHARED[key]
        if last:
            shared.close()


class _Shared:
    """A cluster being started (or running) for ``run_cluster``: its own thread opens it,
    holds it and closes it (a Dask client is closed in the context it was opened in)."""

    def __init__(self, compute: ComputeConfig, timeout: float, warm: tuple[str, ...]):
        self.users = 0
        self.line: str | None = None  # the cluster line, logged by the first user
        self.client: distributed.Client | None = None
        self.error: BaseException | None = None
        self._ready, self._closing = threading.Event(), threading.Event()
        self.spawned = threading.Event()  # the worker processes are started
        self._thread = threading.Thread(target=self._hold, args=(compute, timeout, warm),
                                        name="decflow-dask", daemon=True)
        self._thread.start()

    def _hold(self, compute: ComputeConfig, timeout: float, warm: tuple[str, ...]) -> None:
        # The caller waits for the workers' spawn (``spawned``): until then this process's
        # environment holds the workers' thread settings (see _open_client).
        try:
            with _open_client(compute, timeout=timeout, announce=False) as client:
                self.spawned.set()
                self.line = describe_cluster(compute, client)
                warm_workers(client, warm)
                self.client = client
                self._ready.set()
                self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the first user
            self.error = exc
        finally:
            self.spawned.set()
            self._ready.set()

    def wait(self) -> distributed.Client:
        """The client, once started; the first caller logs the cluster line (in its own
        thread: a run's task, whose logs Prefect keeps; the start thread's would be lost)."""
        self._ready.wait()
        if self.client is None:
            raise self.error
        with _SHARED_LOCK:
            line, self.line = self.line, None
        if line:
            _log.info("%s", line)
        return self.client

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        if self.error is not None and self.client is not None:  # closing failed
            _log.warning("closing the Dask cluster: %s: %s", type(self.error).__name__,
                         self.error)


@contextmanager
def _own_environ() -> Iterator[None]:
    """This process's environment back as it was once the workers are spawned.

    Dask's nannies set ``OMP_NUM_THREADS=1`` (MKL, OpenBLAS, ``MALLOC_TRIM_THRESHOLD_``, ...)
    in this process's environment to spawn their workers with them, and leave them there:
    torch imported here afterwards trained on one thread of two (measured: a pretraining epoch
    over 200,000 rows took 50 s instead of 30), and every process started later (a
    benchmark's CLI runs) inherited them. Restored after the cluster has started; the workers
    keep theirs.
    """
    keys = set(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    saved = {k: os.environ.get(k) for k in keys | {"PYTHONHASHSEED"}}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _cluster_key(compute: ComputeConfig) -> str:
    """What makes two compute sections the same cluster (chunk and batch sizes do not)."""
    return json.dumps(compute.model_dump(mode="json", exclude={"chunk_rows", "batch_rows"}),
                      sort_keys=True)


_WARM_MODULES = {
    "validation": ("decflow.data.validation", "decflow.data.sources",
                   "decflow.data.partitioned"),
    "scoring": ("decflow.model.scoring", "decflow.model.estimator", "decflow.model.features"),
    "training": ("decflow.engine.kmeans", "decflow.engine.centroids",
                 "decflow.model.initialization", "decflow.insight.evaluation"),
}
_WARM_LOCK = threading.Lock()  # one import at a time in a process (threaded workers share one)


class WarmUp(distributed.WorkerPlugin):
    """Every worker imports what a run's tasks use before it runs any task (``warm_worker``).

    Python's imports are not safe to start from two threads at once: a package whose
    ``__init__`` imports its own submodules deadlocks against a thread importing one of them
    directly (each holds the lock the other waits for). On a Dask worker with two threads the
    expectation suite imports Great Expectations, whose charts import ``narwhals.stable``,
    while k-means imports scikit-learn, which imports ``narwhals.stable.v2``: the nightly
    failed with ``_DeadlockError`` on a worker that had restarted. A worker plugin runs on the
    workers there are and, kept by the scheduler, on every worker that joins or restarts later,
    before that worker takes a task.
    """

    idempotent = True  # a scheduler that holds it already (a long-lived cluster) keeps its own

    def __init__(self, what: tuple[str, ...]):
        self.what = tuple(what)

    async def setup(self, worker) -> None:
        # In a thread: the worker's event loop keeps answering the scheduler meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, warm_worker, self.what)


def warm_workers(client: distributed.Client, what: tuple[str, ...]) -> None:
    """Registers ``WarmUp(what)`` with the cluster of ``client`` (once per cluster: a
    scheduler that already holds it keeps its own); returns once every worker has warmed up.
    Raises the error of a worker whose imports failed."""
    if what:
        client.register_plugin(WarmUp(what), name=f"decflow-warm-up-{'-'.join(what)}")


def warm_worker(what: tuple[str, ...]) -> None:
    """Import the modules ``what`` needs ("validation", "scoring", "training") and build the
    Great Expectations context, once per process, one thread at a time."""
    with _WARM_LOCK:
        end_without_a_final_collection()  # a worker's end: its nanny waits for it
        for kind in what:
            for name in _WARM_MODULES[kind]:
                importlib.import_module(name)
        if "validation" in what:
            from decflow.data.validation.gx import warm_context
            warm_context()
        if "scoring" in what:
            keep_large_allocations()
        if "training" in what:
            from decflow.model.compiled import load_umap
            load_umap()


@contextmanager
def _open_client(compute: ComputeConfig, *, timeout: float, announce: bool = True
                 ) -> Iterator[distributed.Client]:
    """A client of the scheduler at ``compute.dask_address`` or of a new embedded cluster;
    ``announce``: log the cluster line now (else ``describe_cluster`` gives it)."""
    if compute.dask_address:
        address = compute.dask_address
        try:
            client = distributed.Client(address, timeout=timeout)
        except Exception as exc:  # OSError, TimeoutError, bad scheme (ValueError), garbage replies
            raise ConnectionError(
                f"could not connect to the Dask scheduler at compute.dask_address={address!r} "
                f"within {timeout:g} s: {type(exc).__name__}: {exc}") from exc
        try:
            if announce:
                _log.info("%s", describe_cluster(compute, client))
            yield client
        finally:
            client.close()
        return

    # Worker processes talk over loopback TCP; threads (processes=False) use the in-process
    # transport. The scheduler serves /health and /metrics over HTTP, and the dashboard's pages
    # where bokeh is installed (importing it costs about 0.4 s and 20 MiB, once per process),
    # by default on :8787, which warns when another cluster holds that port: give it a free
    # loopback port instead. silence_logs applies only while the cluster lives: start/stop
    # chatter stays out of flow logs, real errors still show.
    #
    # The nannies restart a killed worker process themselves. Dask's SpecCluster would also
    # close the nanny of a worker still missing `lost-worker-timeout` (15 s) after a loss; when
    # one worker is lost twice about that far apart, the first loss's timer fires while the
    # worker restarts, closes its nanny mid-restart and the run goes on with one worker fewer.
    # That timer is meant for lost batch jobs, not for local processes: switch it off here.
    network = {"host": "127.0.0.1"} if compute.processes else {}
    cluster_kwargs = dict(
        n_workers=compute.n_workers,
        threads_per_worker=compute.threads_per_worker,
        processes=compute.processes,
        **({"dashboard_address": _LOOPBACK} if _has_bokeh() else
           {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": _LOOPBACK}}),
        # each worker's HTTP server (/health, /metrics) too: Dask's default is every interface
        worker_dashboard_address=_LOOPBACK,
        silence_logs=logging.ERROR,
        **({"memory_limit": compute.memory_limit} if compute.memory_limit else {}),
        **network,
    )
    with dask.config.set({"distributed.deploy.lost-worker-timeout": _NEVER}):
        with _own_environ():
            cluster = distributed.LocalCluster(**cluster_kwargs)
        with cluster, distributed.Client(cluster, timeout=timeout) as client:
            if announce:
                _log.info("%s", describe_cluster(compute, client))
            yield client


def describe_cluster(compute: ComputeConfig, client: distributed.Client) -> str:
    """The log line naming the cluster and where its dashboard is."""
    if compute.dask_address:
        workers = len(client.scheduler_info().get("workers") or {})
        return (f"Dask: the scheduler {redact(compute.dask_address)} with {workers} "
                f"worker{'' if workers == 1 else 's'}, {_dashboard(client, None)}")
    return (f"Dask: an embedded cluster of {compute.n_workers} "
            f"worker{'' if compute.n_workers == 1 else 's'} x {compute.threads_per_worker} "
            f"thread{'' if compute.threads_per_worker == 1 else 's'}, "
            f"{_dashboard(client, '127.0.0.1')}")


def _dashboard(client: distributed.Client, host: str | None) -> str:
    """Where the cluster's dashboard is, for the log: ``dashboard <url>`` on ``host`` (the
    scheduler's own host when None), or why there is none or why its pages are empty."""
    port = (client.scheduler_info().get("services") or {}).get("dashboard")
    if port is None:
        return "no dashboard (the scheduler runs without one)"
    # Dask's own link names the machine's address; an embedded scheduler listens on loopback
    link = f"http://{host}:{port}/status" if host else client.dashboard_link
    if host and not _has_bokeh():
        return (f"dashboard {link} (its pages need bokeh, `pip install 'bokeh>=3.1'`; /health "
                f"and /metrics answer without)")
    return f"dashboard {link}"


_NEVER = "3650d"  # outlives any run: an asyncio timer that is dropped when the cluster closes
_LOOPBACK = "127.0.0.1:0"  # a free port on loopback


@functools.cache
def _import_cluster_modules() -> None:
    """Imports, in the calling thread, what starting an embedded cluster imports (the
    dashboard, about 300 modules of bokeh and Dask, the nannies' process machinery): the
    cluster then starts in its own thread while this one imports the flow, and no two threads
    import at once (see ``WarmUp``)."""
    modules = ["multiprocessing.synchronize", "multiprocessing.resource_tracker",
               "tornado.platform.asyncio",
               *dask.config.get("distributed.scheduler.http.routes"),
               *dask.config.get("distributed.worker.http.routes")]
    if _has_bokeh():
        modules += ["distributed.dashboard.scheduler",
                    "bokeh.application.handlers.document_lifecycle"]
    for name in modules:
        importlib.import_module(name)


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()  # created on first use, once numpy's BLAS is loaded


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run numpy with one BLAS thread inside a partition task.

    Dask's worker processes already get one BLAS thread from their environment; threads of an
    in-process cluster (``processes=False``) do not, and two tasks each running multithreaded
    BLAS on small matrices oversubscribe the cores (measured: 30x slower k-means on 2 cores).
    The limit is process-wide, so concurrent tasks share it: the first to enter sets it, the
    last to leave restores the original.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


_MALLOC_TUNED = False


def keep_large_allocations() -> None:
    """Serve allocations up to 32 MiB from the heap in this process (glibc), once.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set low, which also pins
    glibc's mmap threshold at 128 KiB: every torch activation of a scoring batch is then
    mmapped, page-faulted in and unmapped again. Measured on 2 workers scoring 2M rows in
    batches of 4,096 (32-MB activations): 29k rows/s and 0.97 GiB per worker before, 34k rows/s
    and 1.6 GiB after (the heap keeps what it served). Setting it only around each batch and
    trimming after (``malloc_trim``) kept 1.5 GiB and lost half the gain, so it stays on for
    the worker's life. Freed memory above 64 MiB at the heap top still goes back to the
    system. A no-op where glibc's ``mallopt`` is missing.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (glibc's maximum)
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def one_blas_thread(func: Callable) -> Callable:
    """Decorator for partition-task functions: the body runs under ``single_blas_thread``."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with single_blas_thread():
            return func(*args, **kwargs)
    return wrapper
