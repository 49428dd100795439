"""`--set section.key=value` on every command that takes --config, end to end through the CLI:
the file < DECFLOW_* environment < --set, checked with the resolved config and with a real
`validate` run whose outcome depends on the value; bad items are exit 2 naming the key and
where it was set."""

import re

import pytest
import yaml
from typer.testing import CliRunner

from decflow.config import dump_config
from flowkit import RUN_DATE, tiny_config, write_source
from decflow.flows.cli import app

runner = CliRunner()
COMMANDS_WITH_CONFIG = ["run", "validate", "score", "promote", "rollback", "backfill", "deploy",
                        "serve", "ui", "adopt", "show-config"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("overrides")
    source = str(home / "source")
    write_source(source)
    path = home / "pipeline.yaml"
    data = yaml.safe_load(dump_config(tiny_config(home / "home", source)))
    data["validation"]["min_rows"] = 20
    path.write_text(yaml.safe_dump(data))
    return path


def _resolved(path, *sets, env=None) -> dict:
    args = ["show-config", "--config", str(path)]
    for item in sets:
        args += ["--set", item]
    out = runner.invoke(app, args, env=env or {})
    assert out.exit_code == 0, out.output
    return yaml.safe_load(out.stdout)


@pytest.mark.parametrize("command", COMMANDS_WITH_CONFIG)
def test_every_command_with_a_config_takes_set(command):
    out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "--set" in out.output and "SECTION.KEY=VALUE" in out.output


def test_the_file_then_the_environment_then_set(pipeline):
    env = {"DECFLOW_MODEL__N_CLUSTERS": "5", "DECFLOW_TRAIN__DEVICE": "cpu"}
    assert _resolved(pipeline)["model"]["n_clusters"] == 4  # the file
    assert _resolved(pipeline, env=env)["model"]["n_clusters"] == 5  # environment over file
    both = _resolved(pipeline, "model.n_clusters=6", "model.hidden=[16, 16]",
                     "validation.min_window_days=null", env=env)
    assert both["model"]["n_clusters"] == 6  # --set over the environment
    assert both["model"]["hidden"] == [16, 16]  # values are YAML
    assert both["train"]["device"] == "cpu"  # what --set leaves alone keeps its source
    last = _resolved(pipeline, "model.n_clusters=6", "model.n_clusters=7")
    assert last["model"]["n_clusters"] == 7  # the last --set of a key wins


def test_set_reaches_the_run(pipeline):
    """validate's row check follows the value of the highest-precedence source."""
    base = ["validate", "--config", str(pipeline), "--run-date", str(RUN_DATE)]
    assert runner.invoke(app, base, env={}).exit_code == 0  # 90 rows >= 20 (the file)
    env = {"DECFLOW_VALIDATION__MIN_ROWS": "500"}
    out = runner.invoke(app, base, env=env)
    assert out.exit_code == 1 and "expected at least 500" in out.output
    out = runner.invoke(app, base + ["--set", "validation.min_rows=1000"], env=env)
    assert out.exit_code == 1 and "expected at least 1000" in out.output
    out = runner.invoke(app, base + ["--set", "validation.min_rows=10"], env=env)
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("item, message", [
    ("model.n_clusterz=3", r"model\.n_clusterz: unknown key, found 3; expected one of: "
                           r"n_clusters, .* \(from --set model\.n_clusterz\)"),
    ("model.n_clusters=one", r"model\.n_clusters: .*found 'one' \(from --set "
                             r"model\.n_clusters\)"),
    ("train.max_iter=0", r"train\.max_iter: expected an integer >= 1 or 'auto', found 0 "
                         r"\(from --set train\.max_iter\)"),
    ("model.n_clusters", r"--set 'model\.n_clusters': expected section\.key=value"),
    ("n_clusters=3", r"--set 'n_clusters=3': expected section\.key=value"),
    ("model.hidden=[1, 2", r"--set model\.hidden: the value does not parse as YAML"),
    ("model.n_clusters.x=3", r"--set model\.n_clusters\.x sets model\.n_clusters\.x, but "
                             r"model\.n_clusters is 4, not a section"),
])
def test_a_bad_set_is_a_config_error_naming_the_key(pipeline, item, message):
    out = runner.invoke(app, ["validate", "--config", str(pipeline), "--run-date", str(RUN_DATE),
                              "--set", item], env={})
    assert out.exit_code == 2, out.output
    assert re.search(message, out.output), out.output
    assert "Traceback" not in out.output
