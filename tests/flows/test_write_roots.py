"""A nightly run writes only under its home and its labels root: nothing in the source, the
working directory or beside the roots, also when a name in the config looks like a path (names
that could act as paths in the date column, columns and model name are refused by the config:
tests/unit/test_config_checks.py)."""

import hashlib
import os
from pathlib import Path


from flowkit import RUN_DATE, tiny_config, write_source
from decflow.flows.recluster import recluster


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirs:
            out[str(Path(dirpath) / d) + "/"] = "dir"
    return out


def test_a_run_writes_only_under_its_home_and_labels_roots(tmp_path, monkeypatch):
    parent = tmp_path / "world"
    source, home, labels, cwd = (parent / n for n in ("source", "home", "labels", "cwd"))
    write_source(str(source))
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    config = tiny_config(home, str(source), train={"pretrain_epochs": 2, "max_iter": 10},
                         labels={"uri": str(labels)},
                         registry={"experiment": "../../out"})
    before = _tree(parent)
    out = recluster(config=config, run_date=RUN_DATE)
    assert out["labels"]["rows"] == 90
    after = _tree(parent)
    changed = {p for p in set(after) | set(before) if after.get(p) != before.get(p)}
    outside = sorted(p for p in changed
                     if not (p.startswith(str(home) + os.sep) or p.startswith(str(labels) + os.sep)
                             or p in (str(home) + "/", str(labels) + "/")))
    assert outside == [], outside
    assert any(p.startswith(str(labels)) for p in changed)  # the labels were written
    assert not list(cwd.iterdir())  # nothing in the working directory
    assert not list(tmp_path.glob("out*"))
