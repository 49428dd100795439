"""Config checks: every bad value is a ``ConfigError`` naming the key (and where it came from:
file line, environment variable) with the expected and the found value; no raw tracebacks."""

import pytest
import yaml

from decflow.config import (ModelConfig, PipelineConfig, TrainConfig, apply_environment,
                            load_config)
from decflow.errors import ConfigError

BASE = {"source": {"uri": "data/src", "id_column": "id", "label_column": "truth"},
        "features": {"numeric": ["x"], "vector": {"emb": 8}, "bounds": {"x": [0, 10]}}}


@pytest.fixture
def base_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


@pytest.mark.parametrize("key, value, match", [
    ("train.max_iter", 0, r"train\.max_iter: expected an integer >= 1 or 'auto', found 0"),
    ("train.max_iter", "never", r"train\.max_iter: expected an integer >= 1 or 'auto', "
                                r"found 'never'"),
    ("train.pretrain_epochs", -5, r"train\.pretrain_epochs: expected an integer >= 1 or "
                                  r"'auto', found -5"),
    ("train.warm_start_epochs", 0, r"train\.warm_start_epochs: expected an integer >= 1 or "
                                   r"'auto', found 0"),
    ("train.update_interval", 0, r"train\.update_interval: .*greater than or equal to 1.*"
                                 r"found 0"),
    ("model.hidden", [], r"model\.hidden: .*at least 1 item.*found \[\]"),
    ("model.hidden", [32, 0], r"model\.hidden\.1: .*greater than or equal to 1.*found 0"),
    ("features.bounds", {"x": [5, 1]}, r"features\.bounds: 'x': expected min <= max, "
                                       r"found min=5\.0 > max=1\.0"),
    ("features.bounds", {"x": [float("nan"), 1]}, r"features\.bounds: 'x': expected numbers "
                                                   r"or null, found min=nan"),
    ("train.device", "quantum", r"train\.device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or "
                                r"'mps', found 'quantum'"),
    ("train.device", "cuda:x", r"train\.device: .*found 'cuda:x'"),
    ("train.inference_precision", "fp16", r"train\.inference_precision: .*'auto', "
                                          r"'float32' or 'bfloat16'.*found 'fp16'"),
    ("source.date_column", "../ds", r"source\.date_column: expected a plain name .*"
                                    r"found '\.\./ds'"),
    ("source.date_column", "a/b", r"source\.date_column: .*found 'a/b'"),
    ("source.date_column", "ds=2026-01-01", r"source\.date_column: .*found 'ds=2026-01-01'"),
    ("source.date_column", "", r"source\.date_column: .*found ''"),
    ("source.id_column", "../id", r"source\.id_column: expected a column name without '/', "
                                  r"'\\', '=' or control characters, not '\.' or '\.\.', "
                                  r"found '\.\./id'"),
    ("source.label_column", "a=b", r"source\.label_column: .*found 'a=b'"),
    ("features.numeric", ["x", "../y"], r"features\.numeric: .*found '\.\./y'"),
    ("features.vector", {"a/b": 3}, r"features\.vector: .*found 'a/b'"),
    ("registry.model_name", "../escaped", r"registry\.model_name: expected a registered model "
                                          r"name without '/', ':' .*found '\.\./escaped'"),
    ("registry.model_name", "a:b", r"registry\.model_name: .*found 'a:b'"),
    ("registry.lock_wait_s", -1, r"registry\.lock_wait_s: .*greater than or equal to 0"),
    ("validation.min_window_days", 0, r"validation\.min_window_days: .*greater than or equal"),
    ("model.init_view_rows", 2, r"model\.init_view_rows: .*greater than or equal to 3.*found 2"),
    ("model.init_view_rows", 10, r"model: .*init_view_rows=10 must be greater than "
                                 r"n_clusters=10"),
    # the estimator stops when fewer than this share of labels change: a share in (0, 1)
    ("train.tol", 0, r"train\.tol: .*greater than 0.*found 0"),
    ("train.tol", 1, r"train\.tol: .*less than 1.*found 1"),
    ("compute.batch_rows", 0, r"compute\.batch_rows: expected an integer >= 1 or 'auto', "
                              r"found 0"),
])
def test_bad_values_name_the_key_expected_and_found(base_file, key, value, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(base_file, {key: value}, env={})
    assert str(base_file) in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("train.max_iter", "auto"), ("train.max_iter", 1), ("train.pretrain_epochs", 3),
    ("train.update_interval", 1), ("train.device", "cuda"), ("train.device", "cuda:1"),
    ("train.device", "cpu"), ("train.device", "mps"), ("source.date_column", "event_date"),
    ("source.date_column", "dt-utc"), ("source.id_column", "customer id.v2"),
    ("features.bounds", {"x": [1, 1]}), ("features.bounds", {"x": [None, -3]}),
    ("model.hidden", [1]), ("model.init_view_rows", None), ("model.init_view_rows", 11),
    ("compute.batch_rows", "auto"), ("compute.batch_rows", 1000),
])
def test_good_values_are_kept(base_file, key, value):
    config = load_config(base_file, {key: value}, env={})
    section, name = key.split(".")
    expected = {"x": tuple(value["x"])} if key == "features.bounds" else value
    assert getattr(getattr(config, section), name) == expected


def test_every_bad_key_is_named_and_the_error_is_a_config_error(base_file):
    with pytest.raises(ConfigError) as err:
        load_config(base_file, {"train.max_iter": 0, "model.n_clusters": 1,
                                "model.n_clusterz": 3}, env={})
    assert type(err.value) is ConfigError
    text = str(err.value)
    assert "train.max_iter: expected an integer >= 1 or 'auto', found 0" in text
    assert "model.n_clusters: Input should be greater than or equal to 2, found 1" in text
    assert "model.n_clusterz: unknown key, found 3; expected one of: " in text
    assert "n_clusters, n_components" in text


def test_found_values_are_redacted(base_file):
    with pytest.raises(ConfigError, match=r"registry\.tracking_uri") as err:
        load_config(base_file, {"registry.tracking_uri": ["http://u:s3cret@host"]}, env={})
    assert "s3cret" not in str(err.value)
    assert "http://u:***@host" in str(err.value)


def test_a_bad_environment_value_names_the_variable(base_file):
    with pytest.raises(ConfigError, match=r"model\.n_clusters: .*valid integer.*found 'abc' "
                                          r"\(from environment variable "
                                          r"DECFLOW_MODEL__N_CLUSTERS\)"):
        load_config(base_file, env={"DECFLOW_MODEL__N_CLUSTERS": "abc"})


def test_an_environment_variable_pointing_at_a_section_names_the_variable(base_file):
    with pytest.raises(ConfigError, match=r"model: .*found 3 \(from environment variable "
                                          r"DECFLOW_MODEL\)"):
        load_config(base_file, env={"DECFLOW_MODEL": "3"})


def test_an_environment_value_that_does_not_parse_names_the_variable(base_file):
    with pytest.raises(ConfigError, match=r"environment variable DECFLOW_MODEL__HIDDEN: "
                                          r"does not parse as YAML"):
        load_config(base_file, env={"DECFLOW_MODEL__HIDDEN": "[1, 2"})


def test_an_environment_key_under_a_value_that_is_not_a_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model": 3}))
    with pytest.raises(ConfigError, match=r"environment variable DECFLOW_MODEL__N_CLUSTERS "
                                          r"sets model\.n_clusters, but model is 3, "
                                          r"not a section"):
        load_config(path, env={"DECFLOW_MODEL__N_CLUSTERS": "4"})


def test_apply_environment_names_the_variable():
    with pytest.raises(ConfigError, match=r"train\.max_iter: .*found 0 \(from environment "
                                          r"variable DECFLOW_TRAIN__MAX_ITER\)"):
        apply_environment(PipelineConfig(), {"DECFLOW_TRAIN__MAX_ITER": "0"})


def test_an_empty_section_means_its_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE) + "model:\ntrain:\n  # nothing set yet\n")
    config = load_config(path, env={"DECFLOW_TRAIN__MAX_ITER": "7"})
    assert config.model == ModelConfig()
    assert config.train == TrainConfig(max_iter=7)


def test_yaml_that_does_not_parse_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  n_clusters: 3\n  hidden: [32, 32\ntrain:\n  max_iter: 5\n")
    with pytest.raises(ConfigError, match=rf"config file {path} does not parse as YAML: "
                                          r".*line \d+, column \d+"):
        load_config(path, env={})


def test_a_file_that_is_not_text_or_not_a_mapping(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"model:\n  n_clusters: \xff\xfe\n")
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text"):
        load_config(path, env={})
    path.write_text("- model\n- train\n")
    with pytest.raises(ConfigError, match=rf"config file {path} must hold a mapping of "
                                          r"sections, found list"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=rf"config file not found: {tmp_path / 'nope.yaml'}"):
        load_config(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize("name", ["DECFLOW_VERSION", "DECFLOW_ENV", "DECFLOW_RELEASE_ID"])
def test_variables_outside_the_config_forms_are_not_config(base_file, name):
    """Deployment tooling sets variables such as DECFLOW_VERSION; only DECFLOW_<SECTION>__<KEY>
    and DECFLOW_<top-level key> are config."""
    config = load_config(base_file, env={name: "1", "DECFLOW_MODEL__N_CLUSTERS": "7"})
    assert config.model.n_clusters == 7


@pytest.mark.parametrize("env, message", [
    ({"DECFLOW_MODEL__N_CLUSTERZ": "7"}, "model.n_clusterz: unknown key"),
    ({"DECFLOW_MODLE__N_CLUSTERS": "7"}, "modle: unknown key"),
])
def test_typos_of_real_keys_stay_errors(base_file, env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base_file, env=env)


def test_a_top_level_key_is_config(base_file, tmp_path):
    config = load_config(base_file, env={"DECFLOW_HOME": str(tmp_path / "h")})
    assert config.home == str(tmp_path / "h")


@pytest.mark.parametrize("features, rows", [
    ({"numeric": ["a", "b", "c", "d"], "categorical": ["e", "f"], "vector": {"v": 56}}, 262_144),
    ({"vector": {"pixels": 256}}, 65_536),  # USPS
    ({"vector": {"pixels": 784}}, 16_384),  # MNIST
    ({"numeric": ["x"]}, 262_144),  # narrow rows: the cap
    ({"vector": {"emb": 100_000}}, 8_192),  # very wide rows: the floor
    ({"vector": {"a": 300, "b": 300}, "text": ["t"]}, 16_384),  # 601 values: 27,915 -> 16,384
])
def test_auto_batch_rows_follow_the_width_of_a_row(features, rows):
    config = PipelineConfig.model_validate({"features": features})
    assert config.compute.batch_rows == "auto"
    assert config.batch_rows() == rows
    fixed = config.model_copy(update={"compute": config.compute.model_copy(
        update={"batch_rows": 1000})})
    assert fixed.batch_rows() == 1000
