"""README "Your table, first night": every command of its block, run as written (bash, in a
fresh directory, the installed `decflow`), in order, against the session's Prefect server, with
a webhook receiver on loopback for `--notify`. The environment only shortens training
(`DECFLOW_*`) and names the receiver (`WEBHOOK_URL`)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
MARKER = ("<!-- first-night: the commands of this block are run by "
          "tests/flows/test_first_night.py -->")
FAST = {"DECFLOW_TRAIN__PRETRAIN_EPOCHS": "3", "DECFLOW_TRAIN__MAX_ITER": "20",
        "DECFLOW_MODEL__HIDDEN": "[32, 32]", "DECFLOW_MODEL__INIT_VIEWS": "1",
        "DECFLOW_COMPUTE__N_WORKERS": "1", "DECFLOW_COMPUTE__PROCESSES": "false",
        "DECFLOW_KMEANS__N_INIT": "2"}


def readme_commands() -> list[str]:
    """The commands of the block after the marker: its lines that are not comments."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "the README lost its first-night block"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def first_night_story(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    work = tmp_path_factory.mktemp("first-night")
    receiver = WebhookReceiver()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DECFLOW_", "PREFECT_"))}
    env.update(FAST, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PREFECT_API_URL=PREFECT_API_URL.value(), WEBHOOK_URL=receiver.url,
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", GX_ANALYTICS_ENABLED="false")
    runs = []
    for command in readme_commands():
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        runs.append((command, done))
        if done.returncode != 0:
            break
    yield {"work": work, "runs": runs, "receiver": receiver}
    receiver.close()


def _output(story, verb: str) -> str:
    [done] = [d for c, d in story["runs"] if c.startswith(f"decflow {verb} ")
              and "2026-11-22" not in c]
    return done.stdout + done.stderr


def test_every_command_of_the_readme_block_succeeds_in_order(first_night_story):
    runs = first_night_story["runs"]
    for command, done in runs:
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert len(runs) == len(readme_commands()) == 8


def test_each_step_leaves_what_the_readme_says(first_night_story):
    work = first_night_story["work"]
    assert "wrote config my.yaml" in _output(first_night_story, "generate")
    assert "id_column: id" in _output(first_night_story, "show-config")
    assert "1200 rows from partitions" in _output(first_night_story, "validate")
    sweep = json.loads((work / "sweep" / "sweep_k.json").read_text())
    assert [row["k"] for row in sweep["rows"]] == [4, 6, 8] and sweep["reason"]
    assert "labels" in _output(first_night_story, "run")
    assert (work / "first-night.html").stat().st_size > 10_000
    assert "automation 'decflow/decflow: failed night'" in _output(first_night_story, "deploy")


def test_the_failed_night_exits_1_naming_the_partition_and_a_message_arrives(
        first_night_story):
    command, failed = first_night_story["runs"][-1]
    assert "2026-11-22" in command
    assert "exit code 1" in failed.stdout
    assert "data error:" in failed.stderr and "ds=2026-11-22" in failed.stderr
    [message] = first_night_story["receiver"].wait_for(1, timeout=120)
    assert message["subject"] == ("decflow: recluster-2026-11-22 of model decflow FAILED "
                                  "(data, exit code 1)")
