"""Run locks: a second holder is refused with a message naming the first; a killed holder
leaves no stale lock; a waiter gets the lock once the holder is done."""

import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from decflow import locks
from decflow.errors import Conflict

HOLDER = """
import sys
from decflow import locks
with locks.hold(sys.argv[1], "labels-ds=2026-11-21", "the night"):
    print("held", flush=True)
    sys.stdin.read()  # until the parent closes stdin (or kills us)
"""


def test_a_second_holder_is_refused_with_the_holder_named(tmp_path):
    with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night") as path:
        assert path == tmp_path / "locks" / "labels-ds_2026-11-21.lock"
        with pytest.raises(Conflict, match=rf"the night is in progress elsewhere: .*held by "
                                           rf"pid {os.getpid()} on "):
            with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night"):
                pass
        with locks.hold(tmp_path, "labels-ds=2026-11-22", "another night"):
            pass  # other names are independent
    with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night"):
        pass  # released after the block


def _start_holder(home):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "held\n"
    return child


@pytest.mark.slow  # kills the process holding the lock
def test_a_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path):
    child = _start_holder(tmp_path)
    try:
        with pytest.raises(Conflict, match=rf"held by pid {child.pid} on .* since "):
            with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night"):
        pass  # the kernel released the killed holder's lock: nothing stale to clear


def test_a_waiter_gets_the_lock_when_the_holder_finishes(tmp_path, monkeypatch):
    waiting, released = threading.Event(), threading.Event()
    polls = []

    def poll(seconds):  # the waiter's poll: tell the test it is waiting, then wait for release
        polls.append(seconds)
        waiting.set()
        assert released.wait(timeout=60)

    monkeypatch.setattr(locks.time, "sleep", poll)
    got = []
    holder = locks.hold(tmp_path, "registry-tiny", "an alias move")
    holder.__enter__()
    waiter = threading.Thread(target=lambda: got.append(
        _acquire(tmp_path, wait_s=600)))
    waiter.start()
    assert waiting.wait(timeout=60)
    holder.__exit__(None, None, None)
    released.set()
    waiter.join(timeout=60)
    assert got == ["acquired"] and polls  # it waited at least once, then held the lock


def _acquire(home, wait_s):
    with locks.hold(home, "registry-tiny", "an alias move", wait_s=wait_s):
        return "acquired"


def test_a_waiter_is_refused_after_its_wait(tmp_path, monkeypatch):
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(locks.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(locks.time, "sleep", lambda seconds: None)
    with locks.hold(tmp_path, "registry-tiny", "an alias move"):
        with pytest.raises(Conflict, match="an alias move is in progress elsewhere after "
                                           "waiting 5 s"):
            _acquire(tmp_path, wait_s=5)


def test_a_check_refuses_while_held_and_takes_nothing(tmp_path):
    locks.refuse_if_held(tmp_path, "labels-ds=2026-11-21", "the night")  # never held: no file
    assert not (tmp_path / "locks").exists()
    with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night") as path:
        with pytest.raises(Conflict, match=rf"the night is in progress elsewhere: {path} is held "
                                           rf"by pid {os.getpid()} on "):
            locks.refuse_if_held(tmp_path, "labels-ds=2026-11-21", "the night")
        locks.refuse_if_held(tmp_path, "labels-ds=2026-11-22", "another night")
    locks.refuse_if_held(tmp_path, "labels-ds=2026-11-21", "the night")  # released: passes
    with locks.hold(tmp_path, "labels-ds=2026-11-21", "the night"):
        pass  # the checks left the lock free


def test_a_run_starting_during_another_s_check_is_not_refused(tmp_path, monkeypatch):
    """A check holds the lock for an instant (shared): a run taking it then polls once more
    instead of being refused, even with no wait."""
    checking = locks.lock_path(tmp_path, "labels-ds=2026-11-21")
    checking.parent.mkdir(parents=True)
    fd = os.open(checking, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the check, caught in its instant
    polled, check_done = threading.Event(), threading.Event()

    def poll(seconds):
        polled.set()
        assert check_done.wait(timeout=60)

    monkeypatch.setattr(locks.time, "sleep", poll)
    got = []

    def run():
        try:
            got.append(_take(tmp_path))
        except Conflict as exc:  # refused without polling: the failure under test
            got.append(exc)
            polled.set()

    runner = threading.Thread(target=run)
    runner.start()
    assert polled.wait(timeout=60)
    fcntl.flock(fd, fcntl.LOCK_UN)  # the check ends
    os.close(fd)
    check_done.set()
    runner.join(timeout=60)
    assert got == ["held"]


def _take(home):
    with locks.hold(home, "labels-ds=2026-11-21", "the night"):
        return "held"
