"""What a nightly run leaves in Prefect and MLflow to find each other: a run name that says what
it did, the links both ways, and the library's progress lines in the Prefect run's logs."""

import pytest

from flowkit import RUN_DATE, mlflow_client, run_artifacts


@pytest.fixture
def nightly(first_night):
    """The session's shared first night (read only) and its MLflow run."""
    config, result = first_night.config, first_night.result
    return config, result, mlflow_client(config).get_run(result["run_id"])


def _flow_run(flow_run_id: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _log_lines(flow_run_id: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the run's log records are sent in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])), limit=200)
    return [log.message for log in logs]


def test_the_flow_run_is_named_after_the_night_it_labels(nightly):
    config, result, run = nightly
    flow_run = _flow_run(run.data.tags["prefect.flow_run_id"])
    assert flow_run.name == f"recluster-{RUN_DATE}"
    assert run.data.tags["prefect.flow_run_name"] == flow_run.name
    assert run.info.run_name == flow_run.name


def test_mlflow_run_and_prefect_run_link_to_each_other(nightly):
    config, result, run = nightly
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    assert run.data.tags["prefect.flow_name"] == "recluster"
    artifacts = run_artifacts(flow_run_id)
    exp = run.info.experiment_id
    run_link = f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{result['run_id']}"
    version_link = f"http://127.0.0.1:5000/#/models/tiny/versions/{result['model_version']}"
    # Prefect stores a link artifact as its Markdown link
    assert artifacts["mlflow-run"].data == f"[MLflow run {result['run_id']}]({run_link})"
    assert artifacts["mlflow-model-version"].data == \
        f"[tiny version {result['model_version']}]({version_link})"
    assert result["links"] == {"mlflow_run": run_link, "model_version": version_link}


def test_library_progress_reaches_the_prefect_run_logs_without_a_terminal(nightly):
    config, result, run = nightly
    lines = _log_lines(run.data.tags["prefect.flow_run_id"])
    text = "\n".join(lines)
    for expected in ("pretraining: 10 epochs", "pretraining epoch 10: loss=",
                     "fine-tuning update 1: step=5 kl=", "k-means done: best of 3 restarts",
                     "cluster sizes: [",
                     f"ds=2026-11-19..{RUN_DATE} (3 partitions): 270 rows validated",
                     f"ds={RUN_DATE}: 90 rows validated, 90 labels written"):
        assert expected in text, f"{expected!r} not in the run's logs:\n{text}"


@pytest.fixture
def failing_flow():
    from prefect import flow

    from decflow.config import PipelineConfig
    from decflow.tasks.runtime import prepare_run

    @flow(name="fails-with-a-secret")
    def fails(config: PipelineConfig):
        prepare_run(config)
        raise RuntimeError("could not reach http://decflow:s3cret-word@mlflow:5000/api")

    return fails


def test_prefect_s_own_failure_logs_are_redacted(failing_flow, tmp_path, capfd):
    """Prefect logs a failed run's exception (message and traceback) to the console and to the
    server; a URL password in it must not reach either."""
    from prefect import get_client

    from decflow.config import PipelineConfig

    state = failing_flow(config=PipelineConfig(home=str(tmp_path)), return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    text = "\n".join(_log_lines(str(run.id)))
    assert "decflow:***@mlflow:5000" in text
    out = capfd.readouterr()
    assert "s3cret-word" not in text + out.out + out.err
