"""The `decflow` command line (typer) against real stores."""

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowkit import RUN_DATE, tiny_config, write_source
from decflow.config import dump_config, load_config
from decflow.data import partitioned
from decflow.flows.cli import RENAMED, rename_options, app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_help_lists_every_command_and_explains_options():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in ("demo", "run", "validate", "score", "ui"):
        assert cmd in out.output
    sub = runner.invoke(app, ["score", "--help"])
    assert "--model" in sub.output and "--run-date" in sub.output


def test_version_prints_the_installed_package_version():
    from importlib.metadata import version

    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.output == f"decflow {version('decflow')}\n"


def test_shell_completion_completes_commands_and_options():
    """The installed `decflow` command completes in bash (what `decflow --install-completion`
    sets up): the protocol click uses, driven as bash would, in a process of its own."""
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("decflow")

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {**os.environ, "_DECFLOW_COMPLETE": "complete_bash", "COMP_WORDS": line,
               "COMP_CWORD": str(len(words) - 1)}
        done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("decflow ru") == ["run"]
    assert "sweep-k" in complete("decflow s")
    assert "--run-date" in complete("decflow score --r")
    # --show-completion names the shell it runs under (a parent process): here bash
    shown = subprocess.run(["bash", "-c", f"'{exe}' --show-completion; exit $?"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "_DECFLOW_COMPLETE=complete_bash" in shown.stdout, shown.stdout


def test_example_config_loads():
    config = load_config(ROOT / "deployments" / "config.example.yaml")
    assert config.model.n_clusters == 12
    assert config.features.vector == {"profile_embedding": 32}


# A key misspelt inside a section, a date that does not parse and a failed expectation are
# in test_exit_codes.py (with their exact messages).
def test_an_unknown_config_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  n_clusters: 3\n")
    out = runner.invoke(app, ["validate", "--config", str(path)])
    assert out.exit_code == 2, out.output
    assert f"config error: invalid config {path}:\n  modle: unknown key, found " \
           "{'n_clusters': 3}; expected one of: home, source, features, validation, model, " \
           "train, kmeans" in out.output


def test_a_date_that_is_not_in_the_calendar_is_a_parameter_error(config_file):
    out = runner.invoke(app, ["validate", "--config", str(config_file), "--run-date",
                              "2026-02-30"])
    assert out.exit_code == 2, out.output
    assert "'2026-02-30' is not a date (YYYY-MM-DD)" in out.output


def test_validate_passes_a_good_window_with_exit_code_0(config_file):
    out = runner.invoke(app, ["validate", "--config", str(config_file), "--run-date",
                              str(RUN_DATE), "--window"])
    assert out.exit_code == 0, out.output
    assert "270 rows" in out.output and "passed" in out.output


def test_run_then_score_with_a_chosen_version(tmp_path):
    source = str(tmp_path / "src")
    write_source(source)
    config = tiny_config(tmp_path / "home", source, train={"pretrain_epochs": 3})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    out = runner.invoke(app, ["run", "--config", str(path), "--run-date", str(RUN_DATE)])
    assert out.exit_code == 0, out.output
    assert "labels" in out.output and "champion" in out.output
    day = "2026-11-20"
    out = runner.invoke(app, ["score", "--config", str(path), "--run-date", day,
                              "--model", "1"])
    assert out.exit_code == 0, repr(out.exception)
    labels = partitioned.read_partition(config.labels_uri(), "ds", day)
    assert len(labels) == 90 and set(labels["model_version"]) == {"1"}
    out = runner.invoke(app, ["score", "--config", str(path), "--run-date", day,
                              "--model", "7"])
    assert out.exit_code == 2, out.output
    assert "config error: model 'tiny' has no version or alias '7'" in out.output


@pytest.mark.parametrize("args", [["run", "--run-date", "2026-11-21"], ["run"],
                                  ["score", "--run-date", "2026-11-21"]],
                         ids=["run", "run-yesterday", "score"])
def test_a_night_another_run_writes_is_refused_before_the_cluster_starts(config_file, args,
                                                                        monkeypatch):
    """Refused at once (exit 5, the holder named), without a Dask cluster whose workers it
    would only stop again; run without --run-date checks yesterday, the flow's default."""
    from decflow import locks
    from decflow.flows.cli import nightly

    cfg = load_config(config_file)
    day = "2026-11-21" if "--run-date" in args else str(dt.date.today() - dt.timedelta(days=1))
    started = []
    monkeypatch.setattr(nightly, "run_cluster", lambda *a, **kw: started.append(a))
    with locks.hold(cfg.home, *locks.night(cfg.source.date_column, day)):
        out = runner.invoke(app, [args[0], "--config", str(config_file), *args[1:]])
    assert out.exit_code == 5, out.output
    assert (f"conflict: a run writing the labels of {day} is in progress elsewhere" in
            " ".join(out.output.split()))
    assert started == []


class _Server:
    """Stands in for a server process started by `decflow ui` (records its command)."""

    started: list = []

    def __init__(self, cmd, env):
        self.cmd, self.env = cmd, env
        _Server.started.append(self)

    def wait(self, timeout=None):
        return 0

    def terminate(self):
        pass


def test_ui_serves_the_stores_of_the_given_config(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr("subprocess.Popen", _Server)
    _Server.started = []
    config = tiny_config(tmp_path / "home", str(tmp_path / "src"))
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    out = runner.invoke(app, ["ui", "--config", str(path)])
    assert out.exit_code == 0, out.output
    mlflow, prefect = _Server.started
    assert mlflow.cmd[1:3] == ["server", "--host"]
    assert mlflow.cmd[mlflow.cmd.index("--backend-store-uri") + 1] == config.tracking_uri()
    assert prefect.cmd[1:3] == ["server", "start"]
    # the Prefect database every command of this config uses
    assert prefect.env["PREFECT_HOME"] == str((tmp_path / "home" / "prefect").resolve())


def test_ui_does_not_start_a_store_that_is_already_a_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example:4200/api")
    monkeypatch.setattr("subprocess.Popen", _Server)
    _Server.started = []
    config = tiny_config(tmp_path, str(tmp_path / "src"),
                         registry={"tracking_uri": "https://u:s3cret@mlflow.example"})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config).replace("***", "s3cret"))
    out = runner.invoke(app, ["ui", "--config", str(path)])
    assert out.exit_code == 0, out.output
    assert _Server.started == []
    assert "MLflow UI:  https://u:***@mlflow.example  (a server: not started here)" in out.output
    assert "Prefect UI: http://prefect.example:4200" in out.output
    assert "s3cret" not in out.output


def test_ui_takes_a_config_or_a_home_not_both(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(tiny_config(tmp_path, str(tmp_path / "src"))))
    out = runner.invoke(app, ["ui", "--config", str(path), "--home", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert "Invalid value for --home: give --config or --home, not both" in out.output


def _options_in_help(command: str) -> set[str]:
    import re

    out = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    return set(re.findall(r"(--[a-z][a-z-]*)", out.output))


@pytest.mark.parametrize("command", sorted(RENAMED))
def test_renamed_options_show_only_their_new_spelling(command):
    shown = _options_in_help(command)
    for old, new in RENAMED[command].items():
        assert new in shown
        assert old not in shown


def test_the_one_vocabulary_across_commands():
    for command in ("validate", "score", "promote", "run", "report", "sweep-k", "generate"):
        assert "--run-date" in _options_in_help(command)
    for command in ("score", "promote", "adopt", "backfill"):
        assert "--model" in _options_in_help(command)


@pytest.mark.parametrize("args", [
    ["score", "--date", str(RUN_DATE), "--model-version", "9"],
    ["score", f"--date={RUN_DATE}", "--model-version=9"],
    ["promote", "--candidate", "9", "--date", str(RUN_DATE)],
    ["adopt", "--version", "9"],
], ids=["score", "score-equals", "promote", "adopt"])
def test_old_spellings_still_work_for_one_release(config_file, args):
    out = runner.invoke(app, [args[0], "--config", str(config_file), *args[1:]])
    # parsed: the model reference '9' reached the one model check
    assert out.exit_code == 2, out.output
    assert "config error: model 'tiny' has no version or alias '9'" in out.output
    old = [a.partition("=")[0] for a in args[1:] if a.startswith("--")]
    for name in old:
        assert f"note: {args[0]} {name} is now {RENAMED[args[0]][name]}" in out.output


def test_generate_takes_its_old_spellings(tmp_path):
    out = runner.invoke(app, ["generate", "--rows", "40", "--days", "2", "--out",
                              str(tmp_path / "src"), "--end-date", "2026-11-21"])
    assert out.exit_code == 0, out.output
    assert partitioned.list_partitions(str(tmp_path / "src"), "ds") == [dt.date(2026, 11, 20),
                                                                     dt.date(2026, 11, 21)]


def test_old_spellings_are_renamed_up_to_a_double_dash():
    assert rename_options("history", ["--out", "a", "--", "--out"]) == ["--out-dir", "a", "--", "--out"]
    assert rename_options("sweep-k", ["--out=b"]) == ["--out-dir=b"]
    assert rename_options("run", ["--date", "x"]) == ["--date", "x"]  # run never had --date


def test_a_command_s_process_ends_without_the_interpreter_s_last_collections(tmp_path):
    """Every command, once per process, freezes the heap at exit, after the exit handlers
    registered since it began (``decflow.environment.end_without_a_final_collection``): the
    interpreter's teardown then no longer collects the ~600,000 objects of a flow run several
    times over. Not before exit: the command itself runs with the collector as it was."""
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(dump_config(tiny_config(tmp_path / "home", str(tmp_path / "src"))))
    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('at exit, frozen:', gc.get_freeze_count() > 0))\n"
            "from typer.testing import CliRunner\n"
            "from decflow.flows.cli import app\n"
            "for _ in range(2):\n"
            f"    r = CliRunner().invoke(app, ['show-config', '--config', {str(config)!r}])\n"
            "    print('exit', r.exit_code, 'frozen:', gc.get_freeze_count() > 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exit 0 frozen: False", "exit 0 frozen: False",
                                        "at exit, frozen: True"]
