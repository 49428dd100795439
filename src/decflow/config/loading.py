"""Loading a ``PipelineConfig``.

Precedence: a YAML file < environment variables ``DECFLOW_<SECTION>__<FIELD>`` (values parsed as
YAML, e.g. ``DECFLOW_MODEL__N_CLUSTERS=12``) < explicit overrides (CLI flags). Unknown keys are
errors everywhere. A section left empty in the file (``model:`` with nothing under it) means that
section's defaults, as if it were not written. Every problem is a ``ConfigError`` naming each bad
key, the expected and the found value, and where it came from (file line, environment variable).
Nothing here touches the file system until a function is called.
"""

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from decflow.config.sections import PipelineConfig, _Section
from decflow.errors import ConfigError
from decflow.redaction import redact

ENV_PREFIX = "DECFLOW_"


def _set_path(d: dict, path: list[str], value, origin: str) -> None:
    """Set ``d[path[0]][path[1]]... = value``; an empty (None) section becomes a mapping."""
    for i, p in enumerate(path[:-1]):
        if d.get(p) is None:
            d[p] = {}
        if not isinstance(d[p], dict):
            raise ConfigError(f"{origin} sets {'.'.join(path)}, but {'.'.join(path[:i + 1])} is "
                              f"{_found(d[p])}, not a section (a mapping)")
        d = d[p]
    d[path[-1]] = value


def _found(value) -> str:
    """``repr(value)`` for an error message: secrets redacted, long values cut."""
    text = redact(repr(value))
    return text if len(text) <= 120 else text[:117] + "..."


def _known_keys(loc: tuple) -> list[str] | None:
    """The keys allowed at ``loc`` (a path of sections), or None when it is not a section."""
    cls: type[BaseModel] = PipelineConfig
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, _Section)):
            return None
        cls = field.annotation
    return list(cls.model_fields)


def _config_error(exc: ValidationError, where: str, origins: dict[tuple, str]) -> ConfigError:
    """One line per bad key: ``model.n_clusters: <what is expected>, found 'abc' (from ...)``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            msg = "unknown key, found " + _found(err["input"]) + (
                f"; expected one of: {', '.join(known)}" if known else "")
        elif err["type"] != "value_error":  # our own messages already say what was found
            msg += f", found {_found(err['input'])}"
        origin = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origins),
                      None)
        lines.append(f"  {'.'.join(loc) or 'config'}: {msg}"
                     + (f" (from {origin})" if origin else ""))
    return ConfigError(f"invalid config{where}:\n" + "\n".join(lines))


def _validate(data: dict, where: str, origins: dict[tuple, str]) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, where, origins) from None


def _read_file(p: Path) -> dict:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text: {exc.reason} at byte "
                          f"{exc.start}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {p} does not parse as YAML: {at}{problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, "
                          f"found {type(loaded).__name__}")
    # A section written with nothing under it (YAML: None) means its defaults.
    return {k: v for k, v in loaded.items() if not (v is None and _known_keys((k,)) is not None)}


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                env: dict[str, str] | None = None, overrides_from: str = "override"
                ) -> PipelineConfig:
    """Build a ``PipelineConfig`` from a YAML file, ``DECFLOW_`` environment variables and
    overrides.

    Args:
        path: YAML file (top-level keys are the sections; an empty section means its
            defaults); None uses the embedded defaults.
        overrides: dotted keys, e.g. ``{"model.n_clusters": 12}``; applied last (a value of
            None sets the key to null).
        env: environment to read (default ``os.environ``).
        overrides_from: how error messages name where an override came from ("--set").

    Raises:
        ConfigError: file missing, not UTF-8 or not YAML (file, line and column named), unknown
            keys or invalid values (each key named with the expected and the found value, and
            the environment variable that set it).
    """
    data: dict = _read_file(Path(path)) if path is not None else {}
    origins: dict[tuple, str] = {}
    _apply_env(data, env, origins)
    for key, value in (overrides or {}).items():
        _set_path(data, key.split("."), value, f"{overrides_from} {key}")
        origins[tuple(key.split("."))] = f"{overrides_from} {key}"
    return _validate(data, f" {path}" if path is not None else "", origins)


def parse_overrides(items: list[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["model.n_clusters=12", "train.device=cpu"]`` -> ``{"model.n_clusters": 12, ...}``.

    Each value is read as YAML (``12`` an int, ``[64, 64]`` a list, ``null`` None, anything
    else text). The model validates keys and values later; this checks the shape only.

    Raises:
        ConfigError: an item is not ``section.key=value``, or its value does not parse.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", key):
            raise ConfigError(f"{option} {_found(item)}: expected section.key=value, e.g. "
                              f"{option} model.n_clusters=12")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{option} {key}: the value does not parse as YAML: {problem}, "
                              f"found {_found(raw)}") from None
        out[key] = value
    return out


def _apply_env(data: dict, env: dict[str, str] | None,
               origins: dict[tuple, str] | None = None) -> list[str]:
    """Set ``DECFLOW_<SECTION>__<KEY>`` values on ``data``; returns the dotted keys set and
    records in ``origins`` which variable set each key path.

    A variable is config when its name has ``__`` (a misspelt section or key is an error, as in
    a file) or is a top-level key (``DECFLOW_HOME``); other ``DECFLOW_*`` variables, such as
    the ``DECFLOW_VERSION`` some deployment tooling sets, are not decflow's and are left alone.
    """
    keys = []
    for key, raw in sorted((env if env is not None else os.environ).items()):
        name = key[len(ENV_PREFIX):].lower()
        if key.startswith(ENV_PREFIX) and name and ("__" in name
                                                     or name in PipelineConfig.model_fields):
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or type(exc).__name__
                raise ConfigError(f"environment variable {key}: does not parse as YAML: "
                                  f"{problem}, found {_found(raw)}") from None
            path = name.split("__")
            _set_path(data, path, value, f"environment variable {key}")
            if origins is not None:
                origins[tuple(path)] = f"environment variable {key}"
            keys.append(name.replace("__", "."))
    return keys


def apply_environment(config: PipelineConfig, env: dict[str, str] | None = None
                      ) -> tuple[PipelineConfig, list[str]]:
    """``config`` with the ``DECFLOW_`` environment variables applied on top.

    This is how a deployed run sees its worker's environment: the deployment's ``config``
    parameter plays the file's part, and the worker's ``DECFLOW_*`` variables (e.g. a tracking
    URI holding a password) override it without ever being stored in Prefect.

    Returns:
        The new config and the dotted keys the environment set (values are not returned, as
        they may be secret).

    Raises:
        ConfigError: unknown keys or invalid values (each named with the variable that set it).
    """
    data = config.model_dump()
    origins: dict[tuple, str] = {}
    keys = _apply_env(data, env, origins)
    return (_validate(data, " (environment)", origins) if keys else config), keys


def dump_config(config: PipelineConfig) -> str:
    """YAML text of a config, secrets redacted (round-trips through ``load_config`` when the
    config holds none: see ``PipelineConfig.secrets``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
