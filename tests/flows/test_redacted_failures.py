"""A failure whose message holds a secret: the run's state messages (flow and task) and logs on
the Prefect server hold it redacted, and the error keeps its type (so its exit code)."""

import pytest
from mlflow.exceptions import MlflowException

from decflow.data import sources
from flowkit import RUN_DATE, tiny_config, write_source
from decflow.flows.score import score
from decflow.tasks.runtime import redact_errors

SENTINEL = "s3cr3t-SENTINEL-9f2"
URI = f"http://decflow:{SENTINEL}@mlflow.internal:5000/api"


class NeedsTwoArgs(Exception):
    def __init__(self, where, why):
        super().__init__(where, why)
        self.where, self.why = where, why

    def __str__(self):
        return f"{self.why} at {self.where}"


@pytest.mark.parametrize("error, kind", [
    (ValueError(f"cannot reach {URI}"), ValueError),
    (MlflowException(f"API request to {URI} failed"), MlflowException),
    (NeedsTwoArgs(URI, "refused"), RuntimeError),  # keeps its message elsewhere: RuntimeError
])
def test_a_secret_leaves_no_function_in_an_error_message(error, kind):
    @redact_errors
    def fails():
        raise error

    with pytest.raises(kind) as caught:
        fails()
    assert SENTINEL not in str(caught.value) and "decflow:***@mlflow.internal" in str(
        caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_error_without_a_secret_is_the_original_object():
    original = ValueError("column 'x' is missing")

    @redact_errors
    def fails():
        raise original

    with pytest.raises(ValueError) as caught:
        fails()
    assert caught.value is original


def test_a_failed_runs_states_and_logs_hold_no_secret(tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, LogFilter,
                                                LogFilterFlowRunId)

    source = str(tmp_path / "source")
    write_source(source)
    config = tiny_config(tmp_path / "home", source)

    def unreachable(*args, **kwargs):
        raise ValueError(f"cannot list partitions at {URI}")

    monkeypatch.setattr(sources, "scan_window", unreachable)
    state = score(config=config, run_date=RUN_DATE, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"cannot list partitions at http://decflow:\*\*\*@"):
        state.result()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run_id])))
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    messages = [flow_run.state.message] + [t.state.message for t in tasks]
    assert len(tasks) >= 1 and all("cannot list partitions" in m for m in messages), messages
    texts = messages + [log.message for log in logs]
    assert not [t for t in texts if SENTINEL in t]
    assert any("decflow:***@mlflow.internal" in t for t in messages)
