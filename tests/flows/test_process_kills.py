"""SIGKILL of a flow's whole process group at chosen moments, then a rerun.

Each `decflow` command runs in a child process, in a session of its own, started by
tests/flows/killable.py (one process that imports the pipeline once and forks a child per
command). The child reports each moment of its work on a pipe and, at the moment the test drew,
waits there until the test kills its process group: no sleeps, no timing.

* Write-back: a backfill over three dates is killed at 20 drawn moments of its label writes
  (each partition: its directory made, four row groups, the complete temporary, the rename).
  Every partition is then byte for byte the old one (or absent, as before) unless it was
  renamed before the kill, then it is the whole new one; readers see no temporary; and the
  rerun relabels exactly the other partitions, ending with an uninterrupted run's labels.
* Training: `decflow run` on a new pipeline is killed as DEC fine-tuning begins, run again and
  killed after registration just before the gate, then run to its end. After each kill no
  version that a gate has not judged holds an alias (the one killed before its gate holds
  none) and the labels are unchanged; the last run succeeds, writes labels and marks the killed
  attempts' MLflow runs FAILED. Its two versions then serve the write-back test.
"""

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from decflow.config import dump_config
from decflow.data import label_store, partitioned
from decflow.registry.versions import DECISION_TAG, PENDING
from flowkit import DAYS, RUN_DATE, tiny_config, write_source

KILLABLE = Path(__file__).with_name("killable.py")
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"}
GROUP_ROWS = 23  # 90 rows a day in row groups of 23: four label row groups a partition
HUNG_S = 600  # only a hung child waits this long (a failure, never a synchronisation)
LANES = 2  # write-back trials run two at a time, each lane with its own copy of the stores


@dataclass
class Run:
    pid: int  # also its process group
    code: int  # exit code; -9 when killed
    marks: list[str]  # the moments it reached, in order ("row-group ds=2026-11-19 2", ...)
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class Zygote:
    """tests/flows/killable.py: runs commands in forked children, kills one at a moment."""

    def __init__(self, cwd: Path):
        self.reports, report_w = os.pipe()
        hold_r, self.hold = os.pipe()  # never written: a stopped child waits on it
        from prefect.settings import PREFECT_API_URL

        # the session's Prefect test server: no child starts a server of its own
        # one torch thread: the children share two cores with Dask's threads
        env = {**os.environ, **QUIET, "PREFECT_API_URL": PREFECT_API_URL.value(),
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(KILLABLE), str(report_w), str(hold_r)],
                                     stdin=subprocess.PIPE, pass_fds=(report_w, hold_r),
                                     env=env, cwd=cwd)
        os.close(report_w)
        os.close(hold_r)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.reports, selectors.EVENT_READ)
        self.pending = b""
        self.ready = False  # its imports go on while the test prepares
        self.child = None  # the pid of the command running, if any

    def _line(self) -> str:
        while b"\n" not in self.pending:
            if not self.selector.select(HUNG_S):
                raise AssertionError(f"no report from killable.py in {HUNG_S} s")
            chunk = os.read(self.reports, 4096)
            if not chunk:
                raise AssertionError(f"killable.py ended (exit code {self.proc.poll()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def run(self, argv: list, log: Path, hook: str | None = None, stop_at: int = 0) -> Run:
        """Run ``decflow *argv``; with ``stop_at`` N, SIGKILL its process group at moment N of
        ``hook``. Returns when the child has ended."""
        if not self.ready:
            assert self._line() == "ready"
            self.ready = True
        request = {"argv": [str(a) for a in argv], "hook": hook, "stop_at": stop_at,
                   "log": str(log)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        kind, pid = self._line().split()
        assert kind == "pid"
        self.child, marks = int(pid), []
        while True:
            kind, _, rest = self._line().partition(" ")
            if kind == "mark":
                marks.append(rest.split(" ", 1)[1])
            elif kind == "stop":
                os.killpg(self.child, signal.SIGKILL)
            elif kind == "exit":
                self.child = None
                return Run(int(pid), int(rest), marks, log)

    def close(self) -> None:
        if self.child is not None:  # a test failed while a command ran: end it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child, signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.wait(timeout=HUNG_S)
        for fd in (self.reports, self.hold):
            os.close(fd)


@pytest.fixture(scope="module")
def zygotes(tmp_path_factory):
    """Two, importing side by side: the write-back trials run in two lanes."""
    zs = [Zygote(tmp_path_factory.mktemp("killable")) for _ in range(LANES)]
    yield zs
    for z in zs:
        z.close()


# --- training --------------------------------------------------------------------------------
@dataclass
class State:
    aliases: dict[str, str]  # alias -> version
    versions: dict[str, str | None]  # version -> promotion decision
    labels: dict[str, str]  # partition -> sha256 of its labels file
    runs: dict[int, str]  # pid of a command -> status of the MLflow run it started


def _state(config, pids=()) -> State:
    uri = config.tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    versions = {str(v.version): v.tags.get(DECISION_TAG)
                for v in client.search_model_versions("name='tiny'")}
    aliases = ({a: str(v) for a, v in client.get_registered_model("tiny").aliases.items()}
               if versions else {})
    runs = {}
    exp = client.get_experiment_by_name(config.registry.experiment)
    for pid in pids:
        found = client.search_runs([exp.experiment_id], f"tags.`decflow.pid` = '{pid}'")
        assert len(found) == 1, (pid, [r.info.run_id for r in found])
        runs[pid] = found[0].info.status
    return State(aliases, versions, _partitions(Path(config.labels_uri())), runs)


def _unjudged_aliases(state: State) -> dict[str, str]:
    return {a: v for a, v in state.aliases.items() if state.versions[v] in (None, PENDING)}


@pytest.fixture(scope="module")
def killed_training(zygotes, tmp_path_factory):
    """`decflow run` on a new pipeline: killed as fine-tuning begins, killed before its gate,
    then run to its end; the state after each (the assertions are the tests below)."""
    base = tmp_path_factory.mktemp("kills")
    source = base / "source"
    write_source(str(source))
    for day in DAYS:
        path = source / f"ds={day}" / partitioned.PART_FILE
        pq.write_table(pq.read_table(path), path, row_group_size=GROUP_ROWS)
    # k-means centroids (UMAP's compilation would cost each child) and one Dask task, so one
    # label row group, per source row group
    config = tiny_config(base / "home", str(source), train={"pretrain_epochs": 3},
                         model={"init": "k-means"}, compute={"chunk_rows": GROUP_ROWS})
    path = base / "tiny.yaml"
    path.write_text(dump_config(config))
    # labels of the run date from an earlier pipeline: the kills must leave them as they are
    ids = pq.read_table(source / f"ds={RUN_DATE}" / partitioned.PART_FILE)["id"].to_pandas()
    n = len(ids)
    partitioned.write_partition(config.labels_uri(), "ds", RUN_DATE, label_store.labels_table(
        ids, np.zeros(n), np.ones(n), np.zeros(n), id_column="id", model_name="tiny",
        model_version="0", run_id="earlier"))
    argv = ["run", "-c", path, "--run-date", RUN_DATE]
    zygote = zygotes[0]
    out = {"config": config, "path": path, "before": _state(config)}
    out["finetune"] = zygote.run(argv, base / "killed-finetune.log", hook="finetune", stop_at=1)
    out["after finetune"] = _state(config, [out["finetune"].pid])
    out["gate"] = zygote.run(argv, base / "killed-gate.log", hook="gate", stop_at=1)
    out["after gate"] = _state(config, [out["gate"].pid])
    out["rerun"] = zygote.run(argv, base / "rerun.log")
    out["after rerun"] = _state(config, [out[k].pid for k in ("finetune", "gate", "rerun")])
    return out


def test_a_kill_as_fine_tuning_begins_registers_nothing_and_writes_no_labels(killed_training):
    killed, state = killed_training["finetune"], killed_training["after finetune"]
    assert killed.code == -signal.SIGKILL, killed.output()
    assert killed.marks == ["finetune"]
    assert state.versions == {} and state.aliases == {}
    assert state.labels == killed_training["before"].labels != {}  # the earlier labels
    assert state.runs[killed.pid] == "RUNNING"  # nobody closed it


def test_a_kill_between_registration_and_the_gate_leaves_the_version_without_alias(
        killed_training):
    killed, state = killed_training["gate"], killed_training["after gate"]
    assert killed.code == -signal.SIGKILL, killed.output()
    assert killed.marks == ["gate"]
    assert state.versions == {"1": PENDING}  # registered, never judged
    assert state.aliases == {}
    assert state.labels == killed_training["before"].labels
    assert state.runs[killed.pid] == "RUNNING"


def test_the_run_after_the_kills_succeeds_and_only_judged_versions_hold_aliases(
        killed_training):
    done, state = killed_training["rerun"], killed_training["after rerun"]
    assert done.code == 0, done.output()
    assert state.versions["1"] == PENDING  # the version killed before its gate stays unjudged
    assert state.versions["2"] == "promote"  # the rerun's was judged: the first champion
    assert not _unjudged_aliases(state), state
    assert state.aliases["champion"] == "2"
    assert list(state.labels) == [f"ds={RUN_DATE}"]
    table = pq.read_table(Path(killed_training["config"].labels_uri()) / f"ds={RUN_DATE}"
                          / partitioned.PART_FILE)
    assert table.num_rows == 90 and set(table["model_version"].to_pylist()) == {"2"}
    assert state.runs[done.pid] == "FINISHED"
    # the next run closes the runs its killed predecessors left RUNNING
    killed = {k: state.runs[killed_training[k].pid] for k in ("finetune", "gate")}
    assert killed == {"finetune": "FAILED", "gate": "FAILED"}


# --- write-back ------------------------------------------------------------------------------
def _partitions(labels: Path) -> dict[str, str]:
    """Each partition's labels file, as the sha256 of its bytes."""
    return {d.name: hashlib.sha256((d / partitioned.PART_FILE).read_bytes()).hexdigest()
            for d in sorted(labels.glob("ds=*")) if (d / partitioned.PART_FILE).exists()}


def _labels(path: Path):
    """A labels file without its write time (the only column a rerun may change)."""
    return pq.read_table(path).drop_columns(["labeled_at"])


def _check_readers(labels: Path, rows: dict[str, int]) -> None:
    """Plain readers see exactly the partitions in place: no temporary, nothing torn."""
    visible = [p for p in labels.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert sorted(p.relative_to(labels).as_posix() for p in visible) == \
        sorted(f"{part}/{partitioned.PART_FILE}" for part in rows)
    if not rows:
        return
    expected = {part.split("=", 1)[1]: n for part, n in rows.items()}
    table = pads.dataset(labels, format="parquet", partitioning="hive").to_table()
    counts = table.group_by("ds").aggregate([("id", "count")]).to_pylist()
    assert {str(r["ds"]): r["id_count"] for r in counts} == expected
    with duckdb.connect() as con:  # one per call: the lanes run in threads
        found = con.sql(f"select ds::varchar, count(*) from read_parquet('{labels}/*/*.parquet', "
                        f"hive_partitioning = true) group by ds").fetchall()
    assert dict(found) == expected


def _lane(zygote, config_path: Path, labels: Path, old_state: Path, first: Run, new: dict,
          moments: list[int], logs: Path) -> set[int]:
    """Kill the backfill at each of ``moments``, check, rerun, check; returns how many
    partitions each kill found renamed."""
    old = _partitions(old_state)
    parts = list(new)
    argv = ["backfill", "-c", config_path, "--start", DAYS[0], "--end", DAYS[2], "--model", "2"]
    outcomes = set()
    for moment in moments:
        if labels.exists():
            shutil.rmtree(labels)
        shutil.copytree(old_state, labels)
        killed = zygote.run(argv, logs / f"killed-{moment}.log", hook="write", stop_at=moment)
        where = f"killed after {first.marks[moment - 1]!r} (moment {moment})"
        assert killed.code == -signal.SIGKILL, f"{where}\n{killed.output()}"
        assert killed.marks == first.marks[:moment], where
        renamed = {m.split()[1] for m in killed.marks if m.startswith("renamed")}
        now = _partitions(labels)
        rows = {}
        for p in parts:
            if p in renamed:  # put in place before the kill: the whole new partition
                assert _labels(labels / p / partitioned.PART_FILE).equals(new[p]), where
                rows[p] = len(new[p])
            elif p in old:  # the old partition, byte for byte
                assert now.get(p) == old[p], f"{where}: {p} is not the old file"
                rows[p] = pq.read_metadata(old_state / p / partitioned.PART_FILE).num_rows
            else:  # none before, none now
                assert p not in now, f"{where}: {p} has a labels file"
        _check_readers(labels, rows)
        outcomes.add(len(renamed))

        again = zygote.run(argv, logs / f"rerun-{moment}.log", hook="write")
        assert again.code == 0, f"{where}; the rerun failed:\n{again.output()}"
        # it relabels exactly the partitions the kill left old, and ends as if never killed
        assert {m.split()[1] for m in again.marks if m.startswith("renamed")} == \
            set(parts) - renamed, where
        assert {p: _labels(labels / p / partitioned.PART_FILE) for p in parts} == new, where
        _check_readers(labels, {p: len(t) for p, t in new.items()})
    return outcomes


def test_a_killed_backfill_leaves_each_partition_old_or_new_and_its_rerun_completes(
        killed_training, zygotes, tmp_path):
    config, path = killed_training["config"], killed_training["path"]
    labels = Path(config.labels_uri())
    # the old labels: version 1's for the first two dates, none for the third
    old_run = zygotes[0].run(["backfill", "-c", path, "--start", DAYS[0], "--end", DAYS[1],
                              "--model", "1", "--force"], tmp_path / "old.log")
    assert old_run.code == 0, old_run.output()
    shutil.rmtree(labels / f"ds={DAYS[2]}")
    old_state = tmp_path / "old-labels"
    shutil.copytree(labels, old_state)
    old = _partitions(old_state)
    assert sorted(old) == [f"ds={DAYS[0]}", f"ds={DAYS[1]}"]
    assert all(set(pq.read_table(old_state / p / partitioned.PART_FILE)["model_version"]
                   .to_pylist()) == {"1"} for p in old)

    # an uninterrupted run: the moments to draw from and the labels every rerun must end with
    argv = ["backfill", "-c", path, "--start", DAYS[0], "--end", DAYS[2], "--model", "2"]
    first = zygotes[0].run(argv, tmp_path / "uninterrupted.log", hook="write")
    assert first.code == 0, first.output()
    parts = [f"ds={d}" for d in DAYS]
    assert first.marks == [m for p in parts for m in
                           (f"opened {p}", *(f"row-group {p} {g}" for g in range(1, 5)),
                            f"closed {p}", f"renamed {p}")]
    new = {p: _labels(labels / p / partitioned.PART_FILE) for p in parts}
    assert all(set(t["model_version"].to_pylist()) == {"2"} for t in new.values())

    # lanes: the first in these stores, the others in copies (their own labels and locks)
    lanes = [(path, labels)]
    for k in range(1, LANES):
        home = tmp_path / f"lane-{k}"
        shutil.copytree(config.home, home, ignore=shutil.ignore_patterns("locks", "labels"))
        lane_config = config.model_copy(update={"home": str(home)})
        lane_path = tmp_path / f"lane-{k}.yaml"
        lane_path.write_text(dump_config(lane_config))
        lanes.append((lane_path, Path(lane_config.labels_uri())))
    # 20 of the 21 moments, each once, in a random order
    moments = np.random.default_rng(0).permutation(np.arange(1, len(first.marks) + 1))[:20]
    with ThreadPoolExecutor(LANES) as pool:
        futures = [pool.submit(_lane, zygotes[k], lane_path, lane_labels, old_state, first, new,
                               moments[k::LANES].tolist(), tmp_path)
                   for k, (lane_path, lane_labels) in enumerate(lanes)]
        outcomes = set().union(*(f.result() for f in futures))
    # kills before any rename, between renames and after the last one were all drawn
    assert outcomes == {0, 1, 2, 3}, moments
