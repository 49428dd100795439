"""Where distributed work runs: a Dask client for an existing scheduler or an embedded
LocalCluster."""

import ctypes
import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dask
import distributed
from threadpoolctl import ThreadpoolController

from decflow.config import ComputeConfig
from decflow.redaction import redact

_log = logging.getLogger(__name__)


@contextmanager
def dask_client(compute: ComputeConfig, *, timeout: float = 15.0) -> Iterator[distributed.Client]:
    """A Dask client, closed (with its embedded cluster, if any) on exit.

    ``compute.dask_address`` set: connect to that scheduler. Otherwise start an embedded
    ``LocalCluster(n_workers, threads_per_worker, processes)`` on loopback, its dashboard on a
    free loopback port. Either way the cluster and its dashboard address are logged (INFO,
    ``decflow.engine.compute``: printed by every command). The client becomes the default Dask
    scheduler inside the ``with`` block.

    Args:
        compute: the compute section of the pipeline config.
        timeout: seconds to wait for the scheduler before giving up.

    Raises:
        ConnectionError: the scheduler at ``compute.dask_address`` could not be reached
            (the message names the address).
    """
    if compute.dask_address:
        address = compute.dask_address
        try:
            client = distributed.Client(address, timeout=timeout)
        except Exception as exc:  # OSError, TimeoutError, bad scheme (ValueError), garbage replies
            raise ConnectionError(
                f"could not connect to the Dask scheduler at compute.dask_address={address!r} "
                f"within {timeout:g} s: {type(exc).__name__}: {exc}") from exc
        try:
            workers = len(client.scheduler_info().get("workers") or {})
            _log.info("Dask: the scheduler %s with %d worker%s, %s", redact(address), workers,
                      "" if workers == 1 else "s", _dashboard(client, None))
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
    with dask.config.set({"distributed.deploy.lost-worker-timeout": _NEVER}), \
            distributed.LocalCluster(**cluster_kwargs) as cluster, \
            distributed.Client(cluster, timeout=timeout) as client:
        _log.info("Dask: an embedded cluster of %d worker%s x %d thread%s, %s",
                  compute.n_workers, "" if compute.n_workers == 1 else "s",
                  compute.threads_per_worker, "" if compute.threads_per_worker == 1 else "s",
                  _dashboard(client, "127.0.0.1"))
        yield client


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
    glibc's mmap threshold at 128 KiB: every torch activation of a scoring batch (4096 x 2000
    floats = 32 MB) is then mmapped, page-faulted in and unmapped again. Measured on 2 workers
    scoring 2M rows: 29k rows/s and 0.97 GiB per worker before, 34k rows/s and 1.6 GiB after
    (the heap keeps what it served). Setting it only around each batch and trimming after
    (``malloc_trim``) kept 1.5 GiB and lost half the gain, so it stays on for the worker's
    life. Freed memory above 64 MiB at the heap top still goes back to the system. A no-op
    where glibc's ``mallopt`` is missing.
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
