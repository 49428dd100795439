"""Stopping a command is clean: `kill -TERM` (systemd, Kubernetes, `docker stop`) or Ctrl-C
(SIGINT) of a real `decflow run` with its own embedded Prefect server and a Dask cluster of
worker processes. The command unwinds: its flow run ends CRASHED, its MLflow run KILLED, no
label partition (or hidden temporary) is left, every process it started is gone, and the exit
code is 128 + the signal's number.

Each command is signalled when its own output shows the moment (a log line), never after a
sleep."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from decflow.config import dump_config
from flowkit import RUN_DATE, mlflow_client, tiny_config, write_source

EXIT_WITHIN_S = 90  # the command's own watchdog gives up unwinding after 60 s
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"}


def _decflow() -> str:
    return str(Path(sys.executable).parent / "decflow")


class Command:
    """`decflow run` in its own session, its stderr read line by line in a thread."""

    def __init__(self, config_path: Path, home: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(QUIET, PREFECT_HOME=str(home / "prefect"),
                   PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                   PREFECT_LOGGING_LEVEL="INFO")
        self.proc = subprocess.Popen(
            [_decflow(), "run", "-c", str(config_path), "--run-date", RUN_DATE.isoformat()],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self.lines.append(None)  # end of output
            self._seen.notify_all()

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        with self._seen:
            found = self._seen.wait_for(
                lambda: any(line is None or text in line for line in self.lines), timeout)
            assert found and any(line and text in line for line in self.lines), \
                f"no line with {text!r}; output:\n{self.output()}"

    def output(self) -> str:
        return "".join(line for line in self.lines if line)


@pytest.fixture
def pipeline(tmp_path):
    home = tmp_path / "home"
    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(home, source, train={"pretrain_epochs": 400, "max_iter": 4000},
                         compute={"n_workers": 1, "threads_per_worker": 1, "processes": True})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    return config, path, home


def _flow_runs(home: Path) -> list[tuple[str, str]]:
    """(name, state type) of every flow run in the home's Prefect database."""
    with sqlite3.connect(f"file:{home / 'prefect' / 'prefect.db'}?mode=ro", uri=True) as db:
        return db.execute("select name, state_type from flow_run").fetchall()


@pytest.mark.parametrize("sig, moment", [
    (signal.SIGTERM, "pretraining epoch 1:"),  # training, the Dask cluster up
    (signal.SIGINT, "fine-tuning update"),  # Ctrl-C, later in training
])
def test_a_stopped_run_ends_crashed_and_killed_leaves_no_labels_and_no_process(
        pipeline, sig, moment):
    config, path, home = pipeline
    command = Command(path, home)
    try:
        command.wait_for_line(moment)
        started = psutil.Process(command.proc.pid).children(recursive=True)
        # what a stop must take down: Prefect's temporary server and the Dask workers
        kinds = " ".join(" ".join(p.cmdline()) for p in started)
        assert "uvicorn" in kinds or "prefect" in kinds, kinds
        assert "distributed" in kinds or "multiprocessing" in kinds, kinds
        command.proc.send_signal(sig)
        code = command.proc.wait(timeout=EXIT_WITHIN_S)
    finally:
        if command.proc.poll() is None:
            os.killpg(command.proc.pid, signal.SIGKILL)
    _, left = psutil.wait_procs(started, timeout=10)
    assert not left, [p.cmdline() for p in left]
    assert code == 128 + sig, command.output()
    out = command.output()
    assert f"stopped by {signal.Signals(sig).name}" in out
    assert "Traceback" not in out, out
    # Dask's own INFO lines stay out of a command's output (its warnings would show)
    assert not re.search(r"\| INFO +\| distributed\.", out), out
    assert _flow_runs(home) == [(f"recluster-{RUN_DATE}", "CRASHED")]
    [run] = mlflow_client(config).search_runs(
        [mlflow_client(config).get_experiment_by_name(config.registry.experiment)
         .experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["decflow.error"] == f"stopped by {signal.Signals(sig).name}"
    labels = Path(config.labels_uri())
    assert not labels.exists() or not any(labels.rglob("*")), list(labels.rglob("*"))
