"""UMAP with its compiled code kept on disk.

numba compiles UMAP's and pynndescent's functions at their first call in each process: about
10 s on 2 cores, paid by every nightly run (a process worker starts a fresh process per run) and
by every command that fits the initialisation views or draws the embedding. Few of those
functions are declared ``cache=True``. ``load_umap`` switches numba's own on-disk cache on for
all of them, so only the first process on a machine compiles them; later ones load the machine
code (about 0.1 s). The cache lives where numba keeps any cached function: ``NUMBA_CACHE_DIR``
when set, else beside the package when that is writable, else the user's cache folder. numba
keys each entry by the function's source file and signature, so an upgraded package compiles
anew.

What the cache cannot keep: pynndescent's neighbour search (``nn_descent``, used by UMAP from
4,096 rows) refers to process-local objects, so numba compiles it in every process (about 10 s
on 2 cores; the nightly draws its 2-D map on a worker that already compiled it for the views),
and the functions it hands its distance function to are keyed by that function object, new in
every process. Their entries would never be found again, so none is written: each fitting
process added about 1 MB to the cache, without end.
"""

import sys
import threading

PACKAGES = ("umap", "pynndescent")
_LOCK = threading.Lock()
# Hold it around every UMAP fit or transform: numba's "workqueue" threading layer (the one left
# where neither TBB nor OpenMP is installed, as in a slim image) aborts the whole process when
# two threads enter parallel compiled code at once, e.g. two view fits on a 2-thread Dask worker.
UMAP_LOCK = threading.Lock()
_CACHED: set[int] = set()  # ids of the dispatchers whose cache is on


def load_umap():
    """The ``umap`` module, its compiled functions (and pynndescent's) cached on disk."""
    import umap
    from numba.core.registry import CPUDispatcher

    with _LOCK:
        # Copies taken in one step: another thread may import meanwhile (a worker warms up
        # while the flow imports), and walking the live dicts failed ("dictionary changed size
        # during iteration") when a garbage collection mid-walk let that thread run.
        for name, module in sys.modules.copy().items():
            if module is None or name.split(".")[0] not in PACKAGES:
                continue
            for value in vars(module).copy().values():
                if isinstance(value, CPUDispatcher) and id(value) not in _CACHED:
                    value.enable_caching()
                    _save_only_reusable(value._cache)
                    _CACHED.add(id(value))
    return umap


def _save_only_reusable(cache) -> None:
    """Makes ``cache`` skip entries whose signature holds a compiled function: numba keys
    them by that function object, so no other process would ever load them."""
    from numba.core import types

    save = cache.save_overload

    def save_reusable(sig, data):
        args = getattr(sig, "args", sig)
        if not any(isinstance(t, types.Dispatcher) for t in args):
            save(sig, data)

    cache.save_overload = save_reusable
