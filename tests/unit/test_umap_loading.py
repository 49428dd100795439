"""``compiled.load_umap`` runs on worker threads while other threads import (the flow's own
imports during the workers' warm-up): its walk over the loaded modules must not fail."""

import gc
import sys
import types

from decflow.model.compiled import load_umap


def test_load_umap_survives_modules_imported_by_another_thread_meanwhile():
    """Failed in CI with "dictionary changed size during iteration": a garbage collection in
    the middle of the walk let another thread run, whose import added to ``sys.modules``.
    Here every collection during the walk adds a module, as that thread did."""
    load_umap()  # umap imported before the walk under test
    added: list[str] = []

    def another_import(phase: str, info: dict) -> None:
        if phase == "start" and len(added) < 50:
            name = f"_decflow_test_import_{len(added)}"
            sys.modules[name] = types.ModuleType(name)
            added.append(name)

    threshold = gc.get_threshold()
    gc.callbacks.append(another_import)
    gc.set_threshold(1)  # a collection at (nearly) every allocation
    try:
        umap = load_umap()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(another_import)
        for name in added:
            sys.modules.pop(name, None)
    assert added, "no collection ran during the walk: the test proves nothing"
    assert umap.__name__ == "umap"
