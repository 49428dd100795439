"""Secrets in config values never leave the process: every serialised form redacts them, while
the values themselves still reach the code that connects."""

import pytest
import yaml
from fastapi.encoders import jsonable_encoder

from decflow.config import PipelineConfig, apply_environment, dump_config, load_config
from decflow.redaction import redact

SENTINEL = "s3ntinel-Pa55word"


@pytest.fixture
def config():
    return load_config(None, {
        "registry.tracking_uri": f"postgresql://decflow:{SENTINEL}@db:5432/mlflow",
        "source.uri": f"s3://tables/source?access_key=AKIA&secret_key={SENTINEL}",
        "compute.dask_address": "tcp://scheduler:8786"}, env={})


def test_the_config_keeps_the_secret_for_connecting(config):
    assert config.tracking_uri() == f"postgresql://decflow:{SENTINEL}@db:5432/mlflow"
    assert config.secrets() == ["registry.tracking_uri", "source.uri"]
    assert PipelineConfig().secrets() == []


@pytest.mark.parametrize("form", [
    lambda c: c.model_dump_json(),
    lambda c: str(c.model_dump(mode="json")),
    lambda c: str(c.flatten()),  # MLflow params
    dump_config,  # the logged config.yaml
    repr,  # tracebacks and log lines that show the object
    lambda c: str(jsonable_encoder({"config": c})),  # how Prefect serialises flow parameters
])
def test_every_serialised_form_redacts_it(config, form):
    text = form(config)
    assert SENTINEL not in text
    assert "decflow:***@db:5432/mlflow" in text and "secret_key=***" in text
    assert "access_key=***" in text  # a key id is redacted too (it names the account)
    assert "tcp://scheduler:8786" in text  # nothing else is touched


def test_redacted_yaml_is_still_a_valid_config(config):
    again = PipelineConfig.model_validate(yaml.safe_load(dump_config(config)))
    assert again.registry.tracking_uri == "postgresql://decflow:***@db:5432/mlflow"
    assert again.model == config.model


@pytest.mark.parametrize("text, expected", [
    ("http://u:pw@host:5000/x", "http://u:***@host:5000/x"),
    ("connect to postgresql+asyncpg://u:p%40ss@h/db failed", "connect to "
     "postgresql+asyncpg://u:***@h/db failed"),
    ("https://h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
    ("https://h/x?X-Amz-Signature=abc", "https://h/x?X-Amz-Signature=***"),
    ("http://user@host/x", "http://user@host/x"),  # no password
    ("s3://bucket/key", "s3://bucket/key"),
    ("/data/ds=2026-11-21/part-0.parquet", "/data/ds=2026-11-21/part-0.parquet"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_the_mlflow_ui_link_carries_no_credentials():
    c = load_config(None, {"registry.tracking_uri": f"https://u:{SENTINEL}@mlflow.example/"},
                    env={})
    assert c.mlflow_ui_url() == "https://mlflow.example"
    assert PipelineConfig().mlflow_ui_url() == "http://127.0.0.1:5000"  # `decflow ui`
    c = load_config(None, {"registry.ui_url": "https://ui.example/mlflow/"}, env={})
    assert c.mlflow_ui_url() == "https://ui.example/mlflow"


def test_environment_applies_over_a_deployed_parameter():
    deployed = PipelineConfig.model_validate(
        {"registry": {"tracking_uri": "http://mlflow:5000"}, "model": {"n_clusters": 5}})
    env = {"DECFLOW_REGISTRY__TRACKING_URI": f"http://u:{SENTINEL}@mlflow:5000",
           "DECFLOW_MODEL__N_CLUSTERS": "7", "OTHER": "x"}
    config, keys = apply_environment(deployed, env)
    assert keys == ["model.n_clusters", "registry.tracking_uri"]
    assert config.model.n_clusters == 7
    assert config.tracking_uri() == f"http://u:{SENTINEL}@mlflow:5000"
    assert apply_environment(deployed, {}) == (deployed, [])
    with pytest.raises(ValueError, match="n_clusterz"):
        apply_environment(deployed, {"DECFLOW_MODEL__N_CLUSTERZ": "3"})
