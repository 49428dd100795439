"""The composed stack (infra/docker-compose.yml) as the stack tier sees it.

Two views, each the one an operator has:
  - the host: the published ports on 127.0.0.1 (MLflow, the Prefect API and UI, S3, the Dask
    dashboard) with the S3 keys of infra/.env, for what a browser, a notebook or an analyst
    reading the labels would use;
  - the compose network: `decflow ...` and other commands in a one-off container of the
    prefect-worker service (`compose.sh run --rm prefect-worker ...`, as infra/README.md's quick
    start does), so service names resolve and the worker's environment applies.

Nothing here depends on pytest; conftest.py turns it into fixtures.
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SH = REPO_ROOT / "infra" / "stack" / "compose.sh"
UP_SH = REPO_ROOT / "infra" / "stack" / "up.sh"
ENV_FILE = REPO_ROOT / "infra" / ".env"
DOCKER = os.environ.get("DOCKER", "docker")
WORKER = "prefect-worker"  # the service whose image and environment one-off commands use
TIMES: dict[str, float] = {}  # what took how long (wall seconds), printed after the tier
NOTES: list[str] = []  # what the fault tests observed, printed after the tier


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of infra/.env (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def run(cmd: list[str], timeout: float = 600, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    """A command with its output captured; with ``check`` a non-zero exit raises with it."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {out.returncode}:\n"
                           f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def browser_get(url: str, timeout: float = 10.0) -> int:
    """The status of a GET as a browser navigates (``Accept: text/html``: the Prefect server
    answers UI routes with its single-page app only for page loads)."""
    request = urllib.request.Request(url, headers={"Accept": "text/html,*/*;q=0.8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 - loopback
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def compose(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """infra/stack/compose.sh ARGS (docker-compose with this machine's settings)."""
    return run([str(COMPOSE_SH), *args], timeout=timeout, check=check, cwd=REPO_ROOT)


@dataclass
class Stack:
    """The running compose project: its name, published ports and S3 keys."""

    project: str
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}"

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def s3_env(self) -> dict[str, str]:
        """What an S3 client on the host needs (pyarrow, boto3)."""
        return {"AWS_ACCESS_KEY_ID": self.env["S3_ACCESS_KEY"],
                "AWS_SECRET_ACCESS_KEY": self.env["S3_SECRET_KEY"],
                "AWS_ENDPOINT_URL": self.s3_url, "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def pyarrow_fs(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.env["S3_ACCESS_KEY"],
                               secret_key=self.env["S3_SECRET_KEY"],
                               endpoint_override=self.s3_url, scheme="http",
                               region="us-east-1")

    def boto3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1",
                            aws_access_key_id=self.env["S3_ACCESS_KEY"],
                            aws_secret_access_key=self.env["S3_SECRET_KEY"])

    def container(self, service: str) -> str:
        """The id of the service's (running or stopped) container."""
        ids = compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def in_network(self, *args: str, mounts: dict[Path, str] | None = None,
                   timeout: float = 600) -> subprocess.CompletedProcess:
        """ARGS in a one-off container of the worker's service, on the compose network, with
        the worker's environment; ``mounts`` maps host files to read-only container paths.
        Not checked: the caller asserts on the exit code."""
        volumes = [a for host, inside in (mounts or {}).items()
                   for a in ("-v", f"{host}:{inside}:ro")]
        return compose("run", "--rm", "--no-deps", "-T", *volumes, WORKER, *args,
                       timeout=timeout, check=False)

    def decflow(self, *args: str, mounts: dict[Path, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
        """The `decflow` CLI as an operator runs it against the stack (see ``in_network``)."""
        return self.in_network("decflow", *args, mounts=mounts, timeout=timeout)

    def python(self, code: str, timeout: float = 120) -> object:
        """Run ``code`` with the image's Python on the compose network; it prints one JSON
        value as its last line, returned decoded."""
        out = self.in_network("python", "-c", code, timeout=timeout)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def health(self) -> dict[str, str]:
        """Service -> health (or state for a container without a health check)."""
        ids = run([DOCKER, "ps", "-aq", "--filter",
                   f"label=com.docker.compose.project={self.project}"]).stdout.split()
        if not ids:
            return {}
        info = json.loads(run([DOCKER, "inspect", *ids]).stdout)
        out = {}
        for c in info:
            service = c["Config"]["Labels"].get("com.docker.compose.service", c["Name"])
            if c["Config"]["Labels"].get("com.docker.compose.oneoff") == "True":
                continue
            state = c["State"]
            out[service] = state.get("Health", {}).get("Status") or state["Status"]
        return out

    def wait_healthy(self, services: list[str], timeout: float = 300) -> None:
        """Poll Docker until every one of ``services`` reports healthy (with a deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if all(health.get(s) == "healthy" for s in services):
                return
            assert time.monotonic() < deadline, f"not healthy after {timeout} s: {health}"
            time.sleep(2)


LONG_RUNNING = ["mlflow-postgres", "prefect-postgres", "seaweedfs", "mlflow", "prefect-server",
                "prefect-worker", "dask-scheduler", "dask-worker-1", "dask-worker-2"]


def published_port(service: str, port: int) -> int:
    """The host port of a service's published container port (127.0.0.1 only)."""
    line = compose("port", service, str(port)).stdout.strip().splitlines()[-1]
    host, _, host_port = line.rpartition(":")
    assert host == "127.0.0.1", f"{service}:{port} is published on {line}, not 127.0.0.1 only"
    return int(host_port)


def bring_up() -> Stack:
    """The stack of infra/.env as the compose file says, via infra/stack/up.sh (`make
    stack-up`: creates infra/.env when missing, `up -d` (which starts what is missing and
    recreates what the file changed), waits until every service is healthy); returns what the
    tests need of it."""
    run([str(UP_SH)], timeout=900, cwd=REPO_ROOT)
    env = read_env_file()
    stack = Stack(env.get("COMPOSE_PROJECT_NAME", "infra"), env)
    stack.ports = {"mlflow": published_port("mlflow", 5000),
                   "prefect": published_port("prefect-server", 4200),
                   "s3": published_port("seaweedfs", 8333),
                   "dask_dashboard": published_port("dask-scheduler", 8787)}
    return stack
