"""MLflow experiments and runs: the experiment of a pipeline, closing runs left RUNNING by a
process that died, and the training callback that streams metrics into a run."""

import logging
import math
import time
import warnings
from collections.abc import Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus
from mlflow.exceptions import MlflowException

from decflow.model.callbacks import Callback
from decflow.registry.client import mlflow_client
from decflow.registry.names import Tag

_log = logging.getLogger(__name__)


def fail_stale_runs(tracking_uri: str, experiment_id: str, still_running: Callable[[Run], bool],
                    *, tags: dict[str, str] | None = None, by: str = "") -> list[str]:
    """Mark FAILED the experiment's RUNNING runs (with these ``tags``) whose process is gone.

    A run whose process failed while the server was down cannot be closed then; the next run
    start closes it. ``still_running(run)`` says whether a run's process may still be working.

    Returns:
        The ids of the runs marked FAILED.
    """
    client = mlflow_client(tracking_uri)
    where = ["attributes.status = 'RUNNING'"]
    where += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    stale = [r for r in client.search_runs([experiment_id], " and ".join(where), max_results=200)
             if not still_running(r)]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for run in stale:
        client.set_tag(run.info.run_id, Tag.ERROR,
                       f"left RUNNING by a process that ended without closing it (e.g. the "
                       f"tracking server was unreachable when it failed); marked FAILED at {now}"
                       f"{f' by run {by}' if by else ''}")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    return [r.info.run_id for r in stale]


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with ``artifact_location``) if missing.

    A deleted experiment of that name is restored. An existing experiment keeps its artifact
    location (MLflow cannot move it); a different one is only logged.
    """
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise exc
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if artifact_location and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        _log.info("experiment %r keeps its artifact location %s (asked for %s)",
                  name, exp.artifact_location, artifact_location)
    return exp.experiment_id


class MlflowCallback(Callback):
    """Streams training metrics to an MLflow run, batched with ``log_batch``.

    Pretraining logs ``<prefix>pretrain_loss`` at step = epoch; fine-tuning logs
    ``<prefix>kl``, ``<prefix>reconstruction`` and ``<prefix>delta_label`` at step = target
    update index. NaN values (no reconstruction term when gamma=0) are skipped. Metrics are
    sent every ``flush_every`` values and at the end of each phase. A logging failure is
    reported as a warning and does not stop training, except a server that does not answer
    (``ServiceUnavailable`` from a ``mlflow_client``): the run fails now rather than after
    training.
    """

    _MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, client: MlflowClient, run_id: str, prefix: str = "",
                 flush_every: int = 200):
        self.client = client
        self.run_id = run_id
        self.prefix = prefix
        self.flush_every = max(1, min(flush_every, self._MAX_BATCH))
        self._pending: list[Metric] = []

    def on_epoch_end(self, phase, epoch, logs):
        if phase == "pretrain":
            values = {"pretrain_loss": logs.get("loss")}
        elif phase == "finetune":
            values = {k: logs.get(k) for k in ("kl", "reconstruction", "delta_label")}
        else:
            values = {f"{phase}_{k}": v for k, v in logs.items()}
        now = int(time.time() * 1000)
        for key, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._pending.append(Metric(f"{self.prefix}{key}", float(value), now, int(epoch)))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def on_phase_end(self, phase, logs):
        self.flush()

    def flush(self) -> None:
        """Send buffered metrics now."""
        pending, self._pending = self._pending, []
        try:
            for start in range(0, len(pending), self._MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=pending[start:start + self._MAX_BATCH],
                                      synchronous=True)
        except MlflowException as exc:
            warnings.warn(f"could not log {len(pending)} training metrics to MLflow run "
                          f"{self.run_id}: {exc}", RuntimeWarning, stacklevel=2)
