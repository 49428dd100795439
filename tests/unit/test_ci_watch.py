""".ci/watch.py: CI shows only a log's tail, so a failed or hung test run must end with what
failed and where a hung test stood."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WATCH = ROOT / ".ci" / "watch.py"


def _watch():
    spec = importlib.util.spec_from_file_location("ci_watch", WATCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DUMP = """\
........F.
Timeout (0:09:50)!
Thread 0x00007f03b78a76c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007f03be675b80 (most recent call first):
  File "/repo/src/decflow/engine/compute.py", line 296 in start
  File "/repo/tests/unit/test_run_cluster.py", line 24 in test_one_cluster
  File "/v/site-packages/_pytest/python.py", line 187 in pytest_pyfunc_call
  File "/v/site-packages/_pytest/runner.py", line 184 in pytest_runtest_call
..
FAILED tests/unit/test_run_cluster.py::test_one_cluster - worker 'gw1' crashed while running
[gw1] node down: Not properly terminated
"""


def test_the_digest_names_the_failed_tests_and_the_stack_of_the_thread_in_a_test():
    lines = DUMP.splitlines(keepends=True)
    digest = _watch().digest(lines + lines, frames=2)  # a stack dumped twice is shown once

    assert digest == [
        "stack of a test thread (Current thread 0x00007f03be675b80), innermost first:",
        '  File "/repo/src/decflow/engine/compute.py", line 296 in start',
        '  File "/repo/tests/unit/test_run_cluster.py", line 24 in test_one_cluster',
        "FAILED tests/unit/test_run_cluster.py::test_one_cluster - worker 'gw1' crashed "
        "while running",
    ]


@pytest.mark.slow  # a pytest run that waits for the limit
def test_a_run_past_its_limit_ends_with_the_stack_of_the_waiting_test(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""\
        import faulthandler, os, signal

        def pytest_configure(config):  # as tests/conftest.py does
            faulthandler.register(signal.SIGUSR1, file=os.dup(2), all_threads=True)
        """))
    (tmp_path / "test_waits.py").write_text(textwrap.dedent("""\
        import threading

        def test_waits_forever():
            threading.Event().wait()
        """))
    log = tmp_path / "out.log"

    done = subprocess.run(
        [sys.executable, str(WATCH), "--limit", "15", "--grace", "5", "--log", str(log), "--",
         sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:timeout",
         "-o", "faulthandler_timeout=0", "-q", str(tmp_path / "test_waits.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert done.returncode == 124, done.stdout[-3000:]
    tail = done.stdout.splitlines()
    end = next(i for i, line in enumerate(tail)
               if line.startswith("== watch: ") and "exited" in line)
    assert "past its 15 s limit" in tail[end]
    assert tail[end + 1].startswith("stack of a test thread")
    assert 'test_waits.py", line 4 in test_waits_forever' in "\n".join(tail[end + 2:])
    # every line of the step's output, led by the time since the start; the log holds it bare
    stamped = [line[8:] for line in tail if re.match(r"\[\d\d:\d\d\] ", line)]
    assert stamped and stamped == log.read_text().splitlines()


@pytest.mark.slow  # waits out the 10 s it gives a pipe left open
def test_a_step_that_succeeds_leaving_a_process_on_the_pipe_ends_with_its_status(tmp_path):
    # the step exits at once; the `sleep` it started keeps the step's output pipe open
    pid_file = tmp_path / "sleep.pid"
    try:
        done = subprocess.run(
            [sys.executable, str(WATCH), "--limit", "600", "--log", str(tmp_path / "out.log"),
             "--", "sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo step done"],
            capture_output=True, text=True, timeout=60)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

    assert done.returncode == 0, done.stdout
    assert done.stdout == "[00:00] step done\n"  # no digest for a step that passed
