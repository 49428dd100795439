"""Long commands show progress on a terminal (rows done of all, the rate, the time left) and
nothing when their output is not one, or under `decflow --quiet`. The commands run as a user
runs them, under a pseudo-terminal (pty) or with their output piped."""

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from flowkit import RUN_DATE

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env() -> dict:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DECFLOW_", "PREFECT_"))}
    env.update(QUIET, PREFECT_API_URL=PREFECT_API_URL.value(), TERM="xterm-256color",
               COLUMNS="160")
    return env


def _decflow() -> str:
    return str(Path(sys.executable).parent / "decflow")


def on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """``decflow *args`` with its standard streams on a pty; its exit code and what a
    terminal would have received (escape sequences removed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([_decflow(), *args], stdin=follower, stdout=follower,
                            stderr=follower, cwd=cwd, env=_env(), close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    code = proc.wait(timeout=300)
    os.close(leader)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def piped(args: list[str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run([_decflow(), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


BAR = r"{what}\s.*?{total}/{total} rows\s+[\d,]+ rows/s\s+left"


def test_generate_shows_rows_rate_and_time_left_on_a_terminal(tmp_path):
    code, out = on_a_terminal(["generate", "--rows", "60000", "--days", "2",
                               "--rows-per-group", "5000", "--out-uri", "t"], tmp_path)
    assert code == 0, out
    assert re.search(BAR.format(what="generate", total="60,000"), out), out


def test_validate_shows_its_rows_on_a_terminal_and_nothing_when_piped_or_quiet(config_file,
                                                                              tmp_path):
    args = ["validate", "--config", str(config_file), "--run-date", str(RUN_DATE),
            "--window"]
    code, out = on_a_terminal(args, tmp_path)
    assert code == 0, out
    assert re.search(BAR.format(what="validate", total="270"), out), out
    for how, (code, out) in {"piped": piped(args, tmp_path),
                             "--quiet": on_a_terminal(["--quiet", *args], tmp_path)}.items():
        assert code == 0, out
        assert "270 rows from partitions" in out, how  # the command's own lines stay
        # and the library's: where the Dask cluster's dashboard is
        assert re.search(r"Dask: an embedded cluster of 1 worker x 2 threads, dashboard "
                         r"http://127\.0\.0\.1:\d+/status", out), (how, out)
        assert "rows/s" not in out and "270/270" not in out, (how, out)
