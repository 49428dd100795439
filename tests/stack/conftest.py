"""Stack tier: the pipeline through the composed servers and worker (infra/docker-compose.yml).

`make stack-test` runs it (after `make stack-build`); it brings the stack up itself with
infra/stack/up.sh (`make stack-up`) and leaves it running (`make stack-down` / `stack-clean`
remove it). The same story as tests/integration, whose helpers it imports (api.py, servers.py,
test_nightly_deployment.py), but every server is the container the compose file starts, the
flow runs are subprocesses of the composed Prefect worker, and the Dask tasks run on the
composed Dask workers.

Outside `make stack-test` (STACK_TEST=1) the tier is skipped: a plain `pytest` must not start
containers. STACK_SCREENSHOT_DIR=docs writes the UI screenshots into docs/ (default: the test's
temporary folder).

Each session uses its own model name and source prefix (`stack-<time>`), so the tier also runs
on a stack that already holds runs (a second `make stack-test` without `stack-clean`).

Fixtures (session-scoped):
  stack  compose.Stack: project, env (infra/.env), ports, mlflow_url, prefect_url, api_url,
         s3_url, s3_env, pyarrow_fs(), boto3_client(), decflow(*args, mounts=),
         in_network(*args), python(code), health(), wait_healthy(services), container(service)
"""

import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent.resolve()
sys.path.insert(0, str(HERE))  # `import compose`
sys.path.insert(0, str(HERE.parent / "integration"))  # `import api, servers` (shared helpers)

import compose  # noqa: E402
import servers  # noqa: E402
import story  # noqa: E402

ENABLE_ENV = "STACK_TEST"

for _k, _v in servers.TELEMETRY_ENV.items():  # the in-process MLflow and Prefect clients
    os.environ.setdefault(_k, _v)


def _in_tier(item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config, items):
    enabled = os.environ.get(ENABLE_ENV) == "1"
    for item in items:
        if _in_tier(item):
            item.add_marker(pytest.mark.stack)
            item.add_marker(pytest.mark.slow)
            if not enabled:
                item.add_marker(pytest.mark.skip(
                    reason=f"the stack tier starts containers: run it with `make stack-test` "
                           f"({ENABLE_ENV}=1)"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed and _in_tier(item) and call.when == "call":
        for service in ("prefect-worker", "dask-worker-1", "dask-worker-2", "mlflow"):
            out = compose.compose("logs", "--no-color", "--tail", "25", service, check=False)
            rep.sections.append((f"{service} log tail", out.stdout[-4000:]))
    return rep


def pytest_terminal_summary(terminalreporter):
    if compose.TIMES:
        terminalreporter.write_line("stack tier wall times: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in compose.TIMES.items()))
    for note in compose.NOTES:
        terminalreporter.write_line(f"stack tier: {note}")


@pytest.fixture(scope="session")
def stack() -> compose.Stack:
    t0 = time.monotonic()
    try:
        stack = compose.bring_up()
    except (RuntimeError, OSError) as e:
        pytest.fail(f"the stack did not come up (make stack-build first?): {e}", pytrace=False)
    compose.TIMES["stack-up"] = time.monotonic() - t0
    return stack


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    where = os.environ.get("STACK_SCREENSHOT_DIR")
    if where:
        path = Path(where)
        return path if path.is_absolute() else compose.REPO_ROOT / path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def deployed(stack, tmp_path_factory):
    """Four days of a 4-cluster mixture (seed 0) up to NIGHT_1 and one day of another mixture
    (seed 1) on NIGHT_2 in the composed bucket (`decflow generate`), and the user's config
    deployed on the pool (`decflow deploy`), both run as an operator does (story.py)."""
    story.generate(stack, 4 * story.ROWS_PER_DAY, 4, story.NIGHT_1, seed=0)
    story.generate(stack, story.ROWS_PER_DAY, 1, story.NIGHT_2, seed=1)
    config = story.user_config(tmp_path_factory.mktemp("stack-config"))
    out = stack.decflow("deploy", "--config", story.CONFIG_IN_CONTAINER, "--work-pool",
                        story.POOL, mounts={config: story.CONFIG_IN_CONTAINER})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"deployed recluster/nightly on work pool {story.POOL!r}" in out.stdout, out.stdout
    return {"config": config}


@pytest.fixture(scope="session")
def night_1(stack, deployed):
    """The first night through the composed worker, with the Dask workers' task counts before
    and after it."""
    before = story.dask_state(stack)
    run = story.timed_run(stack, "recluster/nightly", {"run_date": story.NIGHT_1.isoformat()},
                          "night 1")
    return {"run": run, "dask_before": before, "dask_after": story.dask_state(stack)}
