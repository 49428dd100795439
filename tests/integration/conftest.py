"""Integration tier: real PostgreSQL, SeaweedFS (S3), MLflow, Prefect and Dask servers.

Every server is a plain process on 127.0.0.1 on a free port, started once per session by the
fixtures below (see servers.py for what each one yields) and stopped by pid (its process
group, and descendants that left it) right after the tier's last test, also when tests fail,
on Ctrl-C and on SIGTERM. A missing binary or package (PostgreSQL, the `weed` binary, the
`stack` extra) skips the tier with what to install as the reason, so `make test` works on a
laptop without them; with INTEGRATION_REQUIRED=1 (set by .ci/run) it fails the tier instead.
INTEGRATION_SKIP=1 skips the whole tier.

The first server fixture used starts all five servers side by side in background threads
(each after what it needs: MLflow after PostgreSQL and SeaweedFS, ...): about 15 s wall
instead of 30 s one after the other. INTEGRATION_PRESTART=0 starts each on first use.
Other knobs: INTEGRATION_STARTUP_TIMEOUT (s, default 120), INTEGRATION_KEEP_TMP=1
(keep data dirs and logs), INTEGRATION_PG_BINDIR, INTEGRATION_WEED_BIN (binaries elsewhere).

Fixtures (session-scoped unless said otherwise):
  postgres_server  PostgresServer: pid, port, url, host, user, password, databases,
                   dsn(db="postgres", driver="postgresql"), connect(db), stop()
  s3_server        S3Server: pid, port, url (= endpoint_url), access_key, secret_key, region,
                   buckets ("mlflow", "decflow"), env (client env: AWS_ACCESS_KEY_ID,
                   AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION,
                   MLFLOW_S3_ENDPOINT_URL, ...), boto3_client(), pyarrow_fs(), stop()
  mlflow_server    MlflowServer: pid, port, url (= tracking_uri), backend_store_uri,
                   artifacts_destination ("s3://mlflow/artifacts"), stop()
  prefect_server   PrefectServer: pid, port, url, api_url, env ({"PREFECT_API_URL": ...}),
                   database_url, home, stop()
  dask_cluster     DaskCluster: pid (scheduler's), port, address (= url), dashboard_url (None
                   without bokeh), scheduler / workers (ServerProcess: pid, log_path), env, stop()
  stack_env        dict: telemetry off + s3_server.env + MLFLOW_TRACKING_URI and
                   DECFLOW_REGISTRY__TRACKING_URI + PREFECT_API_URL + DECFLOW_COMPUTE__DASK_ADDRESS,
                   for subprocesses (decflow CLI, workers) that use the whole stack
  s3_environ       (function) s3_server, with its env set in os.environ for the test
  prefect_worker   (function) factory: prefect_worker(pool="decflow-it", env=None, name=None,
                   ...) -> PrefectWorker: pid, name, pool, api_url, process, stop(); creates the
                   process work pool if missing; every worker started is stopped after the test
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import servers` (no package __init__ here)

import servers  # noqa: E402

HERE = Path(__file__).parent.resolve()
SKIP_ENV = "INTEGRATION_SKIP"
REQUIRED_ENV = "INTEGRATION_REQUIRED"

# Set in the test process too (the in-process MLflow / Prefect / GX clients read them).
for _k, _v in servers.TELEMETRY_ENV.items():
    os.environ.setdefault(_k, _v)

atexit.register(servers.stop_all)  # last resort if a teardown never ran


def _stop_all_on_sigterm(signum, frame):
    """A SIGTERM'd pytest runs no teardown nor atexit: the servers (in their own sessions)
    would outlive it. Stop them, then die of SIGTERM as before."""
    servers.stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


if (threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
    signal.signal(signal.SIGTERM, _stop_all_on_sigterm)

STARTUP_TIMES: dict[str, float] = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "integration: real servers (PostgreSQL, SeaweedFS, MLflow, Prefect, Dask)")


def _in_tier(item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config, items):
    if not any(_in_tier(item) for item in items):
        return
    skip = os.environ.get(SKIP_ENV) == "1"
    reason = None
    missing = servers.missing_prerequisites()
    if skip:
        reason = f"{SKIP_ENV}=1" + (
            " (missing: " + "; ".join(missing) + ")" if missing else "")
    elif missing and os.environ.get(REQUIRED_ENV) != "1":
        skip = True
        reason = ("integration tier: missing " + "; ".join(missing) + ". "
                  + servers.INSTALL_HINT.replace("\n", " "))
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.integration)
            if skip:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed and _in_tier(item):
        for proc in list(servers.RUNNING):  # what the servers said last, next to the failure
            rep.sections.append((f"{proc.name} (pid {proc.pid}) log tail: {proc.log_path}",
                                 proc.log_tail(25)))
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the servers right after the tier's last test, not at the end of the whole session
    (tests/unit would otherwise run beside an idle stack). Session fixtures stay cached; their
    own teardown later finds the servers stopped."""
    try:
        return (yield)
    finally:
        if _LAUNCHER and _in_tier(item) and not hasattr(item.config, "workerinput"):  # xdist
            items = item.session.items
            rest = items[items.index(item) + 1:] if item in items else []
            if not any(_in_tier(x) for x in rest):
                _LAUNCHER[0].close()


def pytest_terminal_summary(terminalreporter):
    launcher = _LAUNCHER[0] if _LAUNCHER else None
    if launcher is not None and launcher.timings:
        parts = ", ".join(f"{k} {end - start:.1f} s"
                          for k, (start, end) in launcher.timings.items())
        terminalreporter.write_line(
            f"integration servers up in {launcher.wall_time():.1f} s wall"
            f" ({parts})")
    if STARTUP_TIMES:
        terminalreporter.write_line("integration workers: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in STARTUP_TIMES.items()))


def _fail_or_skip(problem: str) -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(problem)
    pytest.fail(problem, pytrace=False)  # prerequisites present (or required): a real failure


def _started(label: str, get, /, *args, **kwargs):
    """Run ``get(*args, **kwargs)`` (a start function, or a wait for one); a missing
    prerequisite or a failed start fails the test with what to install or the server's log
    (skips it when INTEGRATION_SKIP=1)."""
    try:
        return get(*args, **kwargs)
    except servers.MissingPrerequisite as e:
        problem = str(e)
    except servers.ServerStartError as e:
        problem = f"{label} did not start: {e}"
    _fail_or_skip(problem)  # outside the except block: no chained traceback


@pytest.fixture(scope="session", autouse=True)
def integration_prerequisites():
    """Fail the tier up front, listing everything missing, rather than server by server."""
    missing = servers.missing_prerequisites()
    if missing:
        _fail_or_skip("Missing for the integration tier:\n  - " + "\n  - ".join(missing)
                      + "\n" + servers.INSTALL_HINT)


# What each server needs first. With INTEGRATION_PRESTART=1 (the default) the first
# server fixture used starts them all, side by side, in background threads.
PLAN = {
    "postgres": ((), servers.start_postgres),
    "seaweedfs": ((), servers.start_seaweedfs),
    "mlflow": (("postgres", "seaweedfs"), servers.start_mlflow),
    "prefect": (("postgres",), servers.start_prefect),
    "dask": (("seaweedfs",), lambda s3: servers.start_dask(n_workers=2, env=s3.env)),
}
PRESTART = os.environ.get("INTEGRATION_PRESTART", "1") == "1"
_LAUNCHER: list[servers.Launcher] = []


@pytest.fixture(scope="session")
def _launcher(integration_prerequisites):
    launcher = servers.Launcher(PLAN)
    _LAUNCHER[:] = [launcher]
    try:
        yield launcher
    finally:
        launcher.close()


def _server(launcher: servers.Launcher, name: str):
    if PRESTART:
        launcher.submit_all()
    yield _started(name, launcher.get, name)
    # Stopped (by pid) in _launcher's teardown, which comes after every fixture that uses a
    # server, and stops them side by side: dependents first, PostgreSQL and SeaweedFS last.


@pytest.fixture(scope="session")
def postgres_server(_launcher):
    yield from _server(_launcher, "postgres")


@pytest.fixture(scope="session")
def s3_server(_launcher):
    yield from _server(_launcher, "seaweedfs")


@pytest.fixture(scope="session")
def mlflow_server(_launcher, postgres_server, s3_server):
    yield from _server(_launcher, "mlflow")


@pytest.fixture(scope="session")
def prefect_server(_launcher, postgres_server):
    yield from _server(_launcher, "prefect")


@pytest.fixture(scope="session")
def dask_cluster(_launcher, s3_server):
    yield from _server(_launcher, "dask")


@pytest.fixture(scope="session")
def stack_env(s3_server, mlflow_server, prefect_server, dask_cluster):
    return {
        **servers.TELEMETRY_ENV,
        **s3_server.env,
        "MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "DECFLOW_REGISTRY__TRACKING_URI": mlflow_server.tracking_uri,
        **prefect_server.env,
        "DECFLOW_COMPUTE__DASK_ADDRESS": dask_cluster.address,
    }


@pytest.fixture
def s3_environ(s3_server, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture
def prefect_worker(prefect_server):
    started: list[servers.PrefectWorker] = []

    def start(pool: str = "decflow-it", env: dict[str, str] | None = None,
              name: str | None = None, **kwargs) -> servers.PrefectWorker:
        t0 = time.monotonic()
        worker = _started(f"prefect worker for {pool}", servers.start_prefect_worker,
                          prefect_server.api_url, pool, env=env, name=name, **kwargs)
        STARTUP_TIMES[f"prefect-worker {pool}"] = time.monotonic() - t0
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for w in reversed(started):
            w.stop()
