"""`infra/stack/up.sh` (`make stack-up`) before it starts anything: fresh secrets are refused
beside volumes of an earlier stack, whose databases keep that stack's passwords. Docker and
docker-compose are stand-ins here (``DOCKER``, ``COMPOSE``): they record their calls."""

import os
import subprocess
from pathlib import Path

import pytest

UP_SH = Path(__file__).resolve().parents[2] / "infra" / "stack" / "up.sh"
VOLUMES = ["decflow_mlflow-postgres-data", "decflow_prefect-postgres-data"]


@pytest.fixture()
def tools(tmp_path):
    """A fake ``docker`` answering ``volume ls`` from ``volumes.txt``, and a fake compose that
    stops up.sh where the stack would be configured; both log their arguments."""
    log, volumes = tmp_path / "calls.log", tmp_path / "volumes.txt"
    volumes.write_text("")
    docker, compose = tmp_path / "docker", tmp_path / "compose"
    docker.write_text(f'#!/bin/sh\necho "docker $*" >> {log}\n'
                      f'[ "$1 $2" = "volume ls" ] && cat {volumes}\nexit 0\n')
    compose.write_text(f'#!/bin/sh\necho "compose $*" >> {log}\necho "compose reached" >&2\n'
                       "exit 7\n")
    docker.chmod(0o755)
    compose.chmod(0o755)
    return {"log": log, "volumes": volumes, "env_file": tmp_path / "stack.env",
            "environ": {**os.environ, "DOCKER": str(docker), "COMPOSE": str(compose),
                        "STACK_ENV_FILE": str(tmp_path / "stack.env"),
                        "COMPOSE_PROJECT_NAME": "decflow"}}


def up(tools) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(UP_SH)], env=tools["environ"], capture_output=True,
                          text=True, timeout=60)


def test_new_secrets_beside_volumes_of_an_earlier_stack_are_refused_and_nothing_starts(tools):
    tools["volumes"].write_text("\n".join(VOLUMES) + "\n")
    out = up(tools)
    assert out.returncode == 1
    assert (f"project decflow has volumes of an earlier stack: {' '.join(VOLUMES)}. Their "
            "databases keep that stack's passwords") in out.stderr
    assert "Nothing was started" in out.stderr
    assert not tools["env_file"].exists()  # the file just written is taken back
    calls = tools["log"].read_text().splitlines()
    assert calls == ["docker volume ls -q --filter label=com.docker.compose.project=decflow"]


def test_new_secrets_on_a_machine_without_the_project_s_volumes_go_on(tools):
    out = up(tools)
    assert out.returncode == 7 and "compose reached" in out.stderr
    assert tools["env_file"].exists()


def test_the_existing_env_file_goes_on_with_its_volumes(tools):
    subprocess.run([str(UP_SH.parent / "env.sh"), str(tools["env_file"])], check=True,
                   capture_output=True)
    tools["volumes"].write_text("\n".join(VOLUMES) + "\n")
    out = up(tools)
    assert out.returncode == 7 and "compose reached" in out.stderr
    assert "earlier stack" not in out.stderr
