"""deployments/config.example.yaml is the config a user copies: it holds every key, loads,
and differs from the defaults only where it describes the user's own table."""

from pathlib import Path

import yaml
from pydantic import BaseModel

from decflow.config import PipelineConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "config.example.yaml"
# The example's own table (customers): its source, columns, k and names. Every other value
# in the example is the default.
ABOUT_THE_TABLE = {"source.uri", "source.id_column", "source.window_days", "features.numeric",
                   "features.categorical", "features.vector", "features.bounds",
                   "validation.min_rows", "model.n_clusters", "registry.model_name"}


def keys(model=PipelineConfig, prefix=""):
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += keys(field.annotation, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def value(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_the_example_holds_every_key():
    written = yaml.safe_load(EXAMPLE.read_text())

    def present(key):
        tree = written
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    assert [k for k in keys() if not present(k)] == []


def test_the_example_differs_from_the_defaults_only_about_its_table():
    example = load_config(EXAMPLE, env={}).model_dump(mode="json")
    default = PipelineConfig().model_dump(mode="json")
    differ = {k for k in keys() if value(example, k) != value(default, k)}
    assert differ == ABOUT_THE_TABLE
