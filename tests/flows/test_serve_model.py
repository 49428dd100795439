"""`decflow serve-model`: checks the version's files against their recorded digests, then hands
the process to `mlflow models serve` of that checked copy, offline (`--env-manager local`). The
HTTP round trip itself is tested in the integration tier (tests/integration/test_operations.py).
"""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decflow.config import dump_config
from decflow.flows.cli import app

runner = CliRunner()


@pytest.fixture
def served(first_night, tmp_path, monkeypatch):
    """The shared first night's config as a file; ``os.execve`` recorded, not run."""
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(first_night.config))
    calls = []

    def execve(exe, argv, env):
        calls.append((exe, argv, env))
        raise SystemExit(0)  # as if the server had run and stopped

    monkeypatch.setattr(os, "execve", execve)
    return first_night.config, path, calls


def test_serve_model_serves_the_checked_copy_offline(served):
    config, path, calls = served
    out = runner.invoke(app, ["serve-model", "-c", str(path), "--port", "5123"])
    assert out.exit_code == 0, out.output
    [(exe, argv, env)] = calls
    local = Path(config.home) / "serving" / "tiny-v1"
    assert argv[1:4] == ["models", "serve", "-m"] and Path(argv[4]).is_relative_to(local)
    assert argv[5:] == ["--env-manager", "local", "--host", "127.0.0.1", "--port", "5123",
                        "--workers", "1"]
    assert (Path(argv[4]) / "MLmodel").is_file()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(exe).parent)  # its uvicorn first
    assert "serving tiny version 1 (champion), verified, from" in out.output


def test_serve_model_refuses_a_version_whose_files_changed(served):
    config, path, calls = served
    artifacts = Path(config.home) / "mlartifacts"
    [weights] = [p for p in artifacts.rglob("*.safetensors")
                 if "serving" not in p.parts][:1] or [None]
    assert weights is not None
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-8] + b"\0" * 8)
        out = runner.invoke(app, ["serve-model", "-c", str(path)])
    finally:
        weights.write_bytes(original)
    assert out.exit_code == 1, out.output
    assert "model integrity:" in out.output and "tiny" in out.output
    assert calls == []  # nothing served
