"""``compiled.load_umap`` runs on worker threads while other threads import (the flow's own
imports during the workers' warm-up): its walk over the loaded modules must not fail."""

import subprocess
import sys

# In a process of its own: a collection at nearly every allocation, with a callback, must not
# reach the threads a pytest worker holds from earlier tests (Prefect's, Dask's), whose
# finalizers it would run at arbitrary points of their own.
_WALK = """
import gc, sys, types
from decflow.model.compiled import load_umap

load_umap()  # umap imported before the walk under test
added = []

def another_import(phase, info):
    if phase == "start" and len(added) < 50:
        name = f"_decflow_test_import_{len(added)}"
        sys.modules[name] = types.ModuleType(name)
        added.append(name)

gc.callbacks.append(another_import)
gc.set_threshold(1)  # a collection at (nearly) every allocation
try:
    umap = load_umap()
finally:
    gc.set_threshold(700)
    gc.callbacks.remove(another_import)
print(len(added), umap.__name__)
"""


def test_load_umap_survives_modules_imported_by_another_thread_meanwhile():
    """Failed in CI with "dictionary changed size during iteration": a garbage collection in
    the middle of the walk let another thread run, whose import added to ``sys.modules``.
    Here every collection during the walk adds a module, as that thread did."""
    done = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    added, name = done.stdout.split()
    assert int(added) > 0, "no collection ran during the walk: the test proves nothing"
    assert name == "umap"
