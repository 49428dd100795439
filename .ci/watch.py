"""Run a CI step with a deadline, and end its output with what a reader of the log's tail needs.

    python3 .ci/watch.py --limit 3900 --log test.log -- make test

CI shows only the last lines of a run. A test run that hangs used to end there with progress
dots and the CI's own kill, and a failure with a summary far above the tail. This wrapper:

- streams the step's output, each line led by the minutes and seconds since the start (a slow
  run and a hung one look alike in progress dots), and keeps a copy in ``--log``;
- past ``--limit`` seconds, sends SIGUSR1 to each of the step's processes that handles it
  (tests/conftest.py registers a ``faulthandler`` dump of all threads on it, in pytest's main
  process and in each xdist worker), waits for the dumps, then ends the step's process group;
- when the step fails, prints a digest last: for every stack dump in the log (pytest's
  ``faulthandler_timeout`` or the dumps above), the innermost frames of each thread that was
  running a test; then the failed and crashed tests, at the very end.

Exit status: the step's, or 124 past the limit. Standard library only: it runs on the
system's python3, outside the venv.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

DUMP_SIGNAL = signal.SIGUSR1
# lines that name a failed test in pytest's (and xdist's) output
_FAILED = re.compile(r"^(FAILED|ERROR) |worker '\w+' crashed while running|"
                     r"^E\s+Failed: Timeout|maximum crashed workers")
_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+")
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
# a thread that was inside a test (pytest's runner is on its stack)
_IN_TEST = ("_pytest/runner.py", "_pytest/python.py")


def descendants(root: int) -> list[int]:
    """Every process under ``root`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def catches(pid: int, sig: int) -> bool:
    """Whether ``pid`` has a handler for ``sig`` (others would be killed by it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
    return bool(caught and int(caught.group(1), 16) >> (sig - 1) & 1)


def thread_stacks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The threads of every ``faulthandler`` dump in ``lines``: (header, frames innermost
    first)."""
    threads: list[tuple[str, list[str]]] = []
    frames: list[str] | None = None
    for line in lines:
        if _THREAD.match(line):
            frames = []
            threads.append((line.strip(), frames))
        elif frames is not None and _FRAME.match(line):
            frames.append(line.strip())
        else:
            frames = None  # a blank line or other output ends the thread's frames
    return threads


def digest(lines: list[str], frames: int = 8) -> list[str]:
    """Where each thread that was in a test stood (innermost frames first; each distinct stack
    once), then the failed tests: the names last, as CI shows a log's tail."""
    out, stacks_seen, failed_seen = [], set(), set()
    for header, frame_lines in thread_stacks(lines):
        top = tuple(frame_lines[:frames])
        if top in stacks_seen or not any(m in f for f in frame_lines for m in _IN_TEST):
            continue
        stacks_seen.add(top)
        out.append(f"stack of a test thread ({header.split(' (')[0]}), innermost first:")
        out.extend(f"  {f[:200]}" for f in top)
    for line in lines:
        line = line.rstrip("\n")
        if _FAILED.search(line) and line not in failed_seen:
            failed_seen.add(line)
            out.append(line[:200])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=float, required=True, help="seconds before the dump")
    parser.add_argument("--log", type=Path, required=True, help="copy of the step's output")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds between the dump signal and ending the step")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    started = time.monotonic()
    # unbuffered: what the step printed before it is ended reaches the log
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    expired = threading.Event()

    def watchdog() -> None:
        if proc_done.wait(args.limit):
            return
        expired.set()
        dumping = [p for p in [proc.pid, *descendants(proc.pid)] if catches(p, DUMP_SIGNAL)]
        print(f"\n== watch: {' '.join(cmd)} still running after {args.limit:.0f} s; stacks "
              f"of its {len(dumping)} processes that dump them follow", flush=True)
        for pid in dumping:
            try:
                os.kill(pid, DUMP_SIGNAL)
            except ProcessLookupError:
                pass
        if proc_done.wait(args.grace):
            return
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            if proc_done.wait(wait):
                return

    proc_done = threading.Event()
    timer = threading.Thread(target=watchdog, daemon=True)
    timer.start()
    lines: list[str] = []

    def copy() -> None:
        with open(args.log, "w", encoding="utf-8", errors="replace") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                log.write(line)
                log.flush()
                minutes, seconds = divmod(int(time.monotonic() - started), 60)
                sys.stdout.write(f"[{minutes:02d}:{seconds:02d}] {line}")
                sys.stdout.flush()

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    rc = proc.wait()
    proc_done.set()
    timer.join()
    # a process the step left behind may hold the pipe open: do not wait for it to end
    reader.join(timeout=10)
    if expired.is_set():
        rc = 124
    if rc:
        summary = digest(lines)
        print(f"\n== watch: {' '.join(cmd)} exited {rc}"
              + (f" (past its {args.limit:.0f} s limit)" if expired.is_set() else "")
              + (":" if summary else ""))
        for line in summary:
            print(line)
    return rc


if __name__ == "__main__":
    sys.exit(main())
