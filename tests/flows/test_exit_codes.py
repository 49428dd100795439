"""The CLI's exit codes tell the kinds of failure apart (table in ``flows/cli/app.py``): 1 data,
2 usage or config, 3 a service unavailable, 4 internal error; messages are redacted."""

import pytest
from typer.testing import CliRunner

from flowkit import RUN_DATE, tiny_config, write_source
from decflow.config import dump_config
from decflow.errors import ConfigError, DataError, ModelIntegrityError, ServiceUnavailable
from decflow.flows.cli import app

runner = CliRunner()


def validate(config_file, *options):
    return runner.invoke(app, [*options, "validate", "--config", str(config_file), "--run-date",
                               str(RUN_DATE)])


def test_a_failed_expectation_exits_1(tmp_path):
    source = str(tmp_path / "src")

    def nan(day, cols):
        cols["x"][0] = float("nan")
        return cols

    write_source(source, mutate=nan)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(tiny_config(tmp_path, source)))
    out = runner.invoke(app, ["validate", "--config", str(path), "--run-date", str(RUN_DATE)])
    assert out.exit_code == 1, out.output
    assert "expect_column_values_to_not_be_null on column 'x'" in out.output


def test_a_data_error_exits_1_with_its_message(config_file, monkeypatch):
    def corrupt(*args, **kwargs):
        raise DataError("file ds=2026-11-21/part-0.parquet is not Parquet: magic bytes not "
                        "found")

    monkeypatch.setattr("decflow.data.sources.scan_window", corrupt)
    out = validate(config_file)
    assert out.exit_code == 1, out.output
    assert ("data error: file ds=2026-11-21/part-0.parquet is not Parquet: magic bytes not "
            "found") in out.output


def test_an_unknown_config_key_exits_2_naming_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  n_clusterz: 3\n")
    out = runner.invoke(app, ["validate", "--config", str(path)])
    assert out.exit_code == 2, out.output
    assert "model.n_clusterz: unknown key, found 3; expected one of: n_clusters" in out.output


def test_a_bad_date_exits_2(config_file):
    out = runner.invoke(app, ["validate", "--config", str(config_file), "--run-date", "21/11/2026"])
    assert out.exit_code == 2, out.output
    assert "'21/11/2026' is not a date (YYYY-MM-DD)" in out.output


def test_yaml_that_does_not_parse_exits_2_naming_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  n_clusters: 3\n  hidden: [32, 32\n")
    out = runner.invoke(app, ["validate", "--config", str(path)])
    assert out.exit_code == 2, out.output
    assert f"config error: config file {path} does not parse as YAML: line " in out.output
    assert "Traceback" not in out.output


def test_a_bad_environment_value_exits_2_naming_the_variable(config_file, monkeypatch):
    monkeypatch.setenv("DECFLOW_MODEL__N_CLUSTERS", "abc")
    out = validate(config_file)
    assert out.exit_code == 2, out.output
    assert "(from environment variable DECFLOW_MODEL__N_CLUSTERS)" in out.output


def test_an_internal_error_exits_4_with_one_line_and_a_traceback_file(config_file, tmp_path,
                                                                      monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("decflow.data.sources.scan_window", boom)
    out = validate(config_file)
    assert out.exit_code == 4, out.output
    assert "internal error: RuntimeError: boom\n" in out.output
    assert "Traceback" not in out.output
    files = sorted((tmp_path / "home" / "errors").glob("*.txt"))
    assert len(files) == 1
    assert f"traceback written to {files[0]}" in out.output
    written = files[0].read_text()
    assert "Traceback (most recent call last)" in written and "RuntimeError: boom" in written


def test_traceback_option_prints_the_traceback(config_file, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("decflow.data.sources.scan_window", boom)
    out = validate(config_file, "--traceback")
    assert out.exit_code == 4, out.output
    assert "Traceback (most recent call last)" in out.output
    assert "internal error: RuntimeError: boom" in out.output
    assert not (tmp_path / "home" / "errors").exists()


def test_a_service_unavailable_exits_3(config_file, monkeypatch):
    def down(*args, **kwargs):
        raise ServiceUnavailable("Dask scheduler tcp://10.0.0.5:8786 did not answer within "
                                 "30 s")

    monkeypatch.setattr("decflow.engine.compute.dask_client", down)
    out = validate(config_file)
    assert out.exit_code == 3, out.output
    assert ("service unavailable: Dask scheduler tcp://10.0.0.5:8786 did not answer within "
            "30 s") in out.output


def test_messages_are_redacted(config_file, tmp_path, monkeypatch):
    def leak(*args, **kwargs):
        raise RuntimeError("cannot reach http://u:s3cret@host/api")

    monkeypatch.setattr("decflow.data.sources.scan_window", leak)
    out = validate(config_file)
    assert out.exit_code == 4, out.output
    assert "internal error: RuntimeError: cannot reach http://u:***@host/api" in out.output
    assert "s3cret" not in out.output
    (written,) = (tmp_path / "home" / "errors").glob("*.txt")
    assert "s3cret" not in written.read_text()
    assert "http://u:***@host/api" in written.read_text()


@pytest.mark.parametrize("error, code, line", [
    (ServiceUnavailable("MLflow at http://mlflow:5000 did not answer within 30 s"), 3,
     "service unavailable: MLflow at http://mlflow:5000 did not answer within 30 s"),
    (ConfigError("labels.uri '/data/src' lies inside source.uri '/data/src'"), 2,
     "config error: labels.uri '/data/src' lies inside source.uri '/data/src'"),
])
def test_a_flow_failure_maps_by_its_exception_type(config_file, monkeypatch, error, code, line):
    def fail(*args, **kwargs):
        raise error

    # raised inside the rollback flow's task: the CLI gets the exception back from Prefect
    # (whose own failure log prints the traceback: not asserted here)
    monkeypatch.setattr("decflow.registry.aliases.rollback_champion", fail)
    out = runner.invoke(app, ["rollback", "--config", str(config_file)])
    assert out.exit_code == code, out.output
    assert line in out.output


@pytest.mark.parametrize("command", [
    ["score", "--run-date", str(RUN_DATE), "--model", "9"],
    ["promote", "--model", "9"],
    ["backfill", "--start", str(RUN_DATE), "--end", str(RUN_DATE), "--model", "9"],
    ["adopt", "--model", "9"],
], ids=lambda c: c[0])
def test_a_model_reference_that_does_not_exist_is_exit_2_from_every_command(
        config_file, tmp_path, command):
    out = runner.invoke(app, [command[0], "--config", str(config_file), *command[1:]])
    assert out.exit_code == 2, out.output
    assert "config error: model 'tiny' has no version or alias '9' in sqlite:///" in out.output
    assert not (tmp_path / "home" / "errors").exists()  # the user's mistake, not a bug


def test_a_model_whose_files_differ_from_their_digests_exits_1_naming_adopt(config_file,
                                                                           tmp_path,
                                                                           monkeypatch):
    def tampered(*args, **kwargs):
        raise ModelIntegrityError("model 'tiny' version 1: file estimator.safetensors has "
                                  "sha256 ab12, recorded cd34; if you trust this version, run "
                                  "`decflow adopt --model 1`")

    monkeypatch.setattr("decflow.registry.versions.require_version", tampered)
    out = runner.invoke(app, ["score", "--config", str(config_file), "--run-date", str(RUN_DATE)])
    assert out.exit_code == 1, out.output
    assert ("model integrity: model 'tiny' version 1: file estimator.safetensors has sha256 "
            "ab12") in out.output
    assert "internal error" not in out.output
    assert not (tmp_path / "home" / "errors").exists()


def test_a_first_version_rejected_by_the_gates_exits_1_and_labels_nothing(config_file,
                                                                         tmp_path):
    # every cluster must hold a million training rows: the first version cannot pass
    out = runner.invoke(app, ["run", "--config", str(config_file), "--run-date", str(RUN_DATE),
                              "--set", "promotion.min_cluster_rows=1000000"])
    assert out.exit_code == 1, out.output
    assert "rejected: no champion to label with: version 1 rejected" in out.output
    assert "cluster_sizes" in out.output
    assert "internal error" not in out.output
    assert not (tmp_path / "home" / "errors").exists()
    assert not (tmp_path / "home" / "labels").exists()
