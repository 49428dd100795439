"""One Dask cluster per command (``engine.compute.run_cluster``): every ``dask_client`` inside
shares it, its workers are warmed once, and a start-up failure reaches the step that needed it."""

import logging
import os
import socket
import subprocess
import sys
import threading

import pytest

from decflow.config import ComputeConfig
from decflow.engine import compute
from decflow.engine.compute import dask_client, run_cluster
from decflow.engine.partitions import balanced_chunk_rows

THREADS = ComputeConfig(n_workers=1, threads_per_worker=2, processes=False)


def test_every_client_inside_a_run_shares_one_cluster_which_closes_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="decflow.engine.compute")
    seen = []
    with run_cluster(THREADS):
        with dask_client(THREADS) as first:
            seen.append(first)
        assert first.status == "running"  # leaving a step's client leaves the cluster up

        def step():  # a task of the flow runs in another thread
            with dask_client(THREADS) as client:
                seen.append(client)
        worker = threading.Thread(target=step)
        worker.start()
        worker.join()
        with run_cluster(THREADS), dask_client(THREADS) as nested:  # a subflow joins it
            seen.append(nested)
        assert first.status == "running"
        scheduler = first.scheduler.address
    assert [c is first for c in seen] == [True, True, True]
    assert first.status == "closed"
    lines = [r.getMessage() for r in caplog.records if r.name == "decflow.engine.compute"]
    assert len(lines) == 1 and lines[0].startswith("Dask: an embedded cluster of 1 worker x 2 "
                                                   "threads, dashboard http://127.0.0.1:")
    # other settings (or none) still get a cluster of their own
    with run_cluster(THREADS), dask_client(THREADS.model_copy(update={"n_workers": 2})) as other:
        assert other.scheduler.address != scheduler


def test_chunk_and_batch_sizes_do_not_make_another_cluster():
    with run_cluster(THREADS), dask_client(THREADS) as a, \
            dask_client(THREADS.model_copy(update={"chunk_rows": 10, "batch_rows": 5})) as b:
        assert a is b


def _at_task_start(_=None):
    """On a worker, as a task starts: the heavy libraries already imported, and whether the
    Great Expectations context is built (read without importing anything)."""
    gx = sys.modules.get("decflow.data.validation.gx")
    return (sorted(m for m in ("torch", "great_expectations", "umap") if m in sys.modules),
            getattr(gx, "_BATCH_DEFINITION", None) is not None)


def _first_tasks(client, workers=None):
    """``_at_task_start`` of one task per worker thread, submitted at once (each thread of a
    worker takes one: they start together)."""
    threads = client.nthreads()
    futures = [client.submit(_at_task_start, (w, i), workers=[w], allow_other_workers=False,
                             pure=False)
               for w in (workers or threads) for i in range(threads[w])]
    return client.gather(futures)


def test_every_worker_imports_what_the_run_needs_before_its_first_task(monkeypatch):
    """The validation modules and the Great Expectations context; torch only when the run
    scores. Every thread's first task finds them: no two threads import at once (a package
    importing its own submodules deadlocks against a thread importing one of them). The
    workers get one thread each for BLAS and torch; this process keeps its own setting."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    two = ComputeConfig(n_workers=2, threads_per_worker=2)
    with run_cluster(two, warm=("validation",)), dask_client(two) as client:
        assert _first_tasks(client) == [(["great_expectations"], True)] * 4
        assert set(client.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}
        assert "OMP_NUM_THREADS" not in os.environ


def test_a_worker_that_restarts_imports_everything_again_before_its_first_task():
    """The scheduler keeps the warm-up for workers that join later: a worker killed and
    restarted by its nanny (an out-of-memory kill mid-run) warms up before it takes a task.
    By default a run warms for validation, scoring and training."""
    two = ComputeConfig(n_workers=2, threads_per_worker=2)
    everything = (["great_expectations", "torch", "umap"], True)
    with run_cluster(two), dask_client(two) as client:
        assert _first_tasks(client) == [everything] * 4
        before = set(client.nthreads())
        restarted = sorted(before)[0]
        client.restart_workers([restarted])
        new = set(client.nthreads()) - (before - {restarted})  # a new process, a new address
        assert len(new) == 1 and len(client.nthreads()) == 2
        assert _first_tasks(client, new) == [everything] * 2


def test_a_worker_whose_imports_fail_fails_the_step_that_needs_the_cluster(monkeypatch):
    monkeypatch.setitem(compute._WARM_MODULES, "validation", ("decflow.no_such_module",))
    one = ComputeConfig(n_workers=1, threads_per_worker=2, processes=False)
    with run_cluster(one, warm=("validation",)):
        with pytest.raises(ModuleNotFoundError, match="decflow.no_such_module"):
            with dask_client(one):
                pass


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_the_cluster_starts_in_its_own_thread_without_importing_anything_there(processes):
    """The command imports its flow while the cluster starts: only one thread may import.
    Python's audit hook sees every first import and the thread that made it (the scheduler's
    own tries of optional modules that are not installed are harmless)."""
    code = """if True:
        import sys, threading
        from decflow.config import ComputeConfig
        from decflow.engine.compute import dask_client, run_cluster
        elsewhere = []
        def hook(event, args):
            if event == "import" and threading.current_thread() is not threading.main_thread():
                elsewhere.append((threading.current_thread().name, args[0]))
        sys.addaudithook(hook)
        two = ComputeConfig(n_workers=2, threads_per_worker=1, processes=%s)
        with run_cluster(two, warm=("validation",)), dask_client(two) as client:
            assert client.submit(sum, [1, 2]).result() == 3
        print([f"{t}: {m}" for t, m in elsewhere if m in sys.modules])  # not tries that failed
    """ % processes
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_importing_the_partition_engine_does_not_load_torch():
    """A worker that only validates never imports torch (it loads with the model)."""
    out = subprocess.run([sys.executable, "-c", "import sys, decflow.engine.partitions; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "False"


def test_a_scheduler_that_cannot_be_reached_fails_the_step_that_needs_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    down = ComputeConfig(dask_address=f"tcp://127.0.0.1:{port}")
    with run_cluster(down, timeout=2):
        with pytest.raises(ConnectionError, match=rf"compute.dask_address='tcp://127.0.0.1:"
                                                  rf"{port}' within 2 s"):
            with dask_client(down):
                pass
    assert compute._cluster_key(down) not in compute._SHARED


@pytest.mark.parametrize("chunk_rows, total, threads, expected", [
    (200_000, 1_000_000, 2, 125_000),  # 5 chunks on 2 threads would idle one; 8 do not
    (200_000, 10_000_000, 2, 200_000),  # enough chunks already
    (200_000, 60_000, 2, 25_000),  # never below the floor
    (10_000, 1_000_000, 2, 10_000),  # smaller chunks asked for are kept
    (200_000, 1_000_000, 16, 25_000),
])
def test_chunks_are_cut_so_every_thread_has_work_until_the_end(chunk_rows, total, threads,
                                                                 expected):
    assert balanced_chunk_rows(chunk_rows, total, threads) == expected


@pytest.mark.parametrize("night_rows", [10_000_000, 100_000_000])
def test_by_default_a_large_night_is_read_in_chunks_no_larger_than_a_1m_row_nights(night_rows):
    """A task's memory follows its chunk (or batch) of rows; on the default cluster (2 workers
    x 1 thread) a 1M-row night is cut to 125,000-row chunks so both threads stay busy, and a
    larger night must not get larger chunks, or each worker's peak grows with the night
    (measured: 1.33 GiB per worker on 10M rows in 200,000-row chunks, 0.94 GiB at 1M rows)."""
    default = ComputeConfig()
    threads = default.n_workers * default.threads_per_worker
    small = balanced_chunk_rows(default.chunk_rows, 1_000_000, threads)
    assert balanced_chunk_rows(default.chunk_rows, night_rows, threads) <= small


def test_a_cluster_leaves_this_processes_thread_settings_alone(monkeypatch):
    """Dask's nannies put the workers' settings (one BLAS/OpenMP thread, a low malloc trim
    threshold) into the starting process's environment; torch imported later here, and every
    process started from here, would get them too."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    with dask_client(ComputeConfig(n_workers=1, threads_per_worker=1)) as client:
        assert set(client.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}
        assert set(client.run(os.getenv, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
        assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"}.isdisjoint(
            os.environ)


def test_a_worker_that_warmed_up_ends_without_the_interpreter_s_last_collections():
    """A worker's nanny waits for its process to end: that process (torch, Great
    Expectations, a model) freezes its heap at exit, after its other exit handlers, instead of
    the teardown collecting it several times over (1.6-2.2 s of closing a scoring cluster)."""
    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('at exit, frozen:', gc.get_freeze_count() > 0))\n"
            "from decflow.engine.compute import warm_worker\n"
            "warm_worker(())\n"
            "print('warmed, frozen:', gc.get_freeze_count() > 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines() == ["warmed, frozen: False", "at exit, frozen: True"]
