"""SIGKILL of the writing process at 20 moments of a label write-back: the partition is always
the complete old file or the complete new one, and a rerun writes exactly what an uninterrupted
write does. The writer reports each step on a pipe and the test kills it right after the step
it drew (no sleeps, no timing)."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decflow.data import partitioned

pytestmark = pytest.mark.slow  # kills a writer process

DAY = "2026-11-21"
GROUPS = 8  # row groups per written file

WRITER = textwrap.dedent("""
    import importlib.util, os, sys, types
    import pyarrow as pa
    # decflow.data.partitioned without the package's __init__ (which loads torch): a quick start
    spec = importlib.util.find_spec("decflow")
    package = types.ModuleType("decflow")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["decflow"] = package
    from decflow.data import partitioned

    root, version, out = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def table(g):
        ids = pa.array(range(g * 1000, (g + 1) * 1000))
        return pa.table({"id": ids, "model_version": pa.array([version] * 1000)})
    with partitioned.PartitionWriter(root, "ds", "%s") as w:
        for g in range(%d):
            w.write(table(g))
            os.write(out, b"g")          # a row group is written
            os.read(0, 1)                # wait for the test's go-ahead
    os.write(out, b"r")                  # renamed into place
    os.read(0, 1)
""" % (DAY, GROUPS))


def _expected(version: str) -> pa.Table:
    ids = pa.array(range(GROUPS * 1000))
    return pa.table({"id": ids, "model_version": pa.array([version] * len(ids))})


def _write(root, version, kill_after: int | None):
    """Run the writer; SIGKILL it right after its ``kill_after``-th step (None: let it end)."""
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), version, str(w)],
                            stdin=subprocess.PIPE, pass_fds=(w,))
    os.close(w)
    steps = 0
    try:
        while True:
            step = os.read(r, 1)
            if not step:
                break
            steps += 1
            if kill_after is not None and steps == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
            proc.stdin.write(b"x")
            proc.stdin.flush()
    finally:
        os.close(r)
        proc.wait(timeout=60)
    return proc.returncode


def test_a_killed_writer_leaves_the_old_or_the_new_partition(tmp_path):
    root = tmp_path / "labels"
    assert _write(root, "old", None) == 0
    path = root / f"ds={DAY}" / partitioned.PART_FILE
    assert pq.read_table(path).equals(_expected("old"))
    moments = np.random.default_rng(7).integers(1, GROUPS + 2, size=20)  # 1..GROUPS+1
    seen = set()
    for kill_after in moments.tolist():
        assert _write(root, "new", kill_after) == -signal.SIGKILL
        table = pq.read_table(path)
        if kill_after <= GROUPS:  # killed while writing row groups: the old file stays
            assert table.equals(_expected("old")), kill_after
        else:  # killed after the rename: the new file, complete
            assert table.equals(_expected("new")), kill_after
            assert _write(root, "old", None) == 0  # back to the old one for the next trial
        seen.add(kill_after <= GROUPS)
        # readers of the dataset see one complete file, whatever the temporaries left
        assert len(partitioned.read_dataset(str(root), "ds")) == GROUPS * 1000
    assert seen == {True, False}  # both kinds of moment were drawn
    # the rerun writes exactly what an uninterrupted write does
    assert _write(root, "new", None) == 0
    assert pq.read_table(path).equals(_expected("new"))
