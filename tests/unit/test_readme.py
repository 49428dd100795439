"""What the README tells a user exists: every dotted name it shows under a config section's
name is a config key, a tag or metric name that the code writes, or (the Layout's table) a
module or function of the project."""

import importlib
import re
from pathlib import Path

from pydantic import BaseModel

from decflow.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = set(PipelineConfig.model_fields) - {"home"}


def dotted_names(text: str) -> set[str]:
    """``section.key[.key]`` inside `code` spans, for the config's section names."""
    names = set()
    for code in re.findall(r"`([^`\n]+)`", text):
        for m in re.finditer(r"(?<![\w.])([a-z_]+)\.([a-z_]+(?:\.[a-z_]+)*)", code):
            if m.group(1) in SECTIONS:
                names.add(m.group(0))
    return names


def is_config_key(path: str) -> bool:
    model = PipelineConfig
    for part in path.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) \
                or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def written_by_the_code(name: str) -> bool:
    """The name is spelled as a string in the library, tasks or flows (a tag, metric or
    artifact name they write)."""
    return any(f'"{name}' in p.read_text() for folder in ("src", "tasks", "flows")
               for p in (ROOT / folder).rglob("*.py"))


def is_code(path: str) -> bool:
    """``path`` names a module of the library or of decflow.tasks, or a name defined in one
    (``model.features``, ``train.fit_dec``, ``data.sources.training_sample``); ``x.*`` a
    module."""
    parts = path.split(".")
    star = parts[-1] == "*"
    parts = parts[:-1] if star else parts
    for package in ("decflow", "decflow.tasks"):
        for cut in range(len(parts), 0, -1):  # the longest importable module first
            try:
                obj = importlib.import_module(".".join([package, *parts[:cut]]))
            except ModuleNotFoundError:
                continue
            if star and cut < len(parts):
                break
            for name in parts[cut:]:
                obj = getattr(obj, name, None)
            if obj is not None:
                return True
            break
    return False


def test_every_key_the_readme_names_exists():
    names = dotted_names((ROOT / "README.md").read_text())
    # the reader finds what it should
    assert {"model.view_space", "features.column_weighting", "compute.dask_address"} <= names
    unknown = sorted(n for n in names if not is_config_key(n) and not written_by_the_code(n)
                     and not is_code(n))
    assert unknown == []


def test_a_name_that_is_neither_is_found():
    text = "set `model.n_clusterz` or see `compute.keep_large_allocations`"
    names = dotted_names(text)
    assert names == {"model.n_clusterz", "compute.keep_large_allocations"}
    assert not any(is_config_key(n) or written_by_the_code(n) or is_code(n) for n in names)


def test_module_and_function_names_resolve():
    assert is_code("model.features") and is_code("train.fit_dec")
    assert is_code("data.sources.training_sample") and is_code("promotion.*")
    assert not is_code("model.featurez") and not is_code("train.fit_deck")
    assert not is_code("data.sources.training_sampel")
