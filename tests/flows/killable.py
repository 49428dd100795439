"""Run `decflow` commands in child processes that a test can SIGKILL at a chosen moment.

Test-side helper for tests/flows/test_process_kills.py. Importing torch, Prefect, MLflow and Dask
costs a child most of its run time, so this script imports them once and then forks one child
per command (a zygote). Each child starts its own session (``os.setsid``): the test kills the
child's process group, children included, with ``os.killpg``.

Started as ``python killable.py REPORT_FD HOLD_FD``; reads one JSON request per line on stdin::

    {"argv": ["backfill", "-c", ...], "hook": "write", "stop_at": 3, "log": "/path/run.log"}

and writes lines to REPORT_FD (a pipe the test reads)::

    ready                       once, after the imports
    pid 1234                    a child started (its pid is its process group)
    mark 3 row-group ds=... 2   the child reached moment 3 of its hook
    stop 3                      ... and waits there on HOLD_FD for the SIGKILL (never resumes)
    exit 0                      the child ended: its exit code, -9 when killed (99: an
                                exception escaped the CLI; 70: the test went away)

Hooks (moments are counted from 1 in the order the child reaches them):

* ``write``: every step of a label write-back (``partitioned.PartitionWriter``): ``opened`` (the
  partition directory exists), ``row-group`` (one more row group in the hidden temporary file),
  ``closed`` (the temporary is complete, not yet renamed), ``renamed`` (it replaced the
  partition's file).
* ``finetune``: DEC fine-tuning begins (``decflow.model.training`` dispatches its first callback).
* ``gate``: the promotion gate begins (``decflow.registry.promotion.compare_models``), after the model
  version was registered.

``stop_at`` 0 (or a moment never reached) lets the command run to its end.
"""

import atexit
import json
import os
import sys
import traceback

FDS = {"report": -1, "hold": -1}  # set by main() from its arguments


def report(line: str) -> None:
    os.write(FDS["report"], (line + "\n").encode())


class Moments:
    """Counts a child's moments; blocks at the one the test asked for."""

    def __init__(self, stop_at: int):
        self.stop_at, self.n = stop_at, 0

    def __call__(self, what: str) -> None:
        self.n += 1
        report(f"mark {self.n} {what}")
        if self.n == self.stop_at:
            report(f"stop {self.n}")
            os.read(FDS["hold"], 1)  # the test never writes: only the SIGKILL ends this wait
            os._exit(70)  # the test went away (EOF): never carry on past the moment


def _partition(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def hook_write(moment: Moments) -> None:
    from decflow.data import partitioned

    cls = partitioned.PartitionWriter
    enter, write = cls.__enter__, cls.write

    def __enter__(self):
        out = enter(self)
        moment(f"opened {_partition(self.path)}")
        return out

    def write_(self, table):
        write(self, table)
        self._groups = getattr(self, "_groups", 0) + 1
        moment(f"row-group {_partition(self.path)} {self._groups}")

    replace = partitioned.replace_durably  # the one rename of a finished file (decflow.files)

    def replace_(src, dst):
        if os.path.basename(dst) == partitioned.PART_FILE:
            moment(f"closed {_partition(dst)}")
            replace(src, dst)
            moment(f"renamed {_partition(dst)}")
        else:
            replace(src, dst)

    cls.__enter__, cls.write = __enter__, write_
    partitioned.replace_durably = replace_


def hook_finetune(moment: Moments) -> None:
    from decflow.model import training

    dispatch = training.dispatch

    def dispatch_(callbacks, hook, *args):
        if hook == "on_phase_begin" and args[0] == "finetune":
            moment("finetune")
        dispatch(callbacks, hook, *args)

    training.dispatch = dispatch_


def hook_gate(moment: Moments) -> None:
    from decflow.registry import promotion

    compare = promotion.compare_models

    def compare_models(*args, **kwargs):
        moment("gate")
        return compare(*args, **kwargs)

    promotion.compare_models = compare_models


HOOKS = {"write": hook_write, "finetune": hook_finetune, "gate": hook_gate}


def run_command(request: dict) -> int:
    """The hook, then the CLI in this process; its exit code."""
    if request.get("hook"):
        HOOKS[request["hook"]](Moments(int(request.get("stop_at") or 0)))
    from decflow.flows.cli import app

    try:
        app(args=request["argv"], prog_name="decflow")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def child(request: dict) -> None:
    """In the forked child: a session of its own, output to the log, the command (never
    returns to the zygote's loop)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    report(f"pid {os.getpid()}")
    try:
        code = run_command(request)
    except BaseException:  # noqa: BLE001 - whatever escapes the CLI is this child's failure
        traceback.print_exc()
        code = 99
    # exit as the command would, less the interpreter's teardown (seconds for this many
    # modules): the atexit handlers (Prefect sends its last logs and events), then _exit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    FDS["report"], FDS["hold"] = int(sys.argv[1]), int(sys.argv[2])
    # what the commands import, once: each forked child starts with it (about 15 s saved)
    import alembic.runtime.migration  # noqa: F401
    import distributed.deploy.local  # noqa: F401
    import great_expectations  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401

    import decflow.flows.backfill  # noqa: F401
    import decflow.flows.cli  # noqa: F401
    import decflow.flows.promote  # noqa: F401
    import decflow.flows.recluster  # noqa: F401
    import decflow.flows.score  # noqa: F401

    report("ready")
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        report(f"exit {os.waitstatus_to_exitcode(status)}")
    os._exit(0)  # stdin closed: done (the interpreter's teardown would only cost seconds)


if __name__ == "__main__":
    main()
