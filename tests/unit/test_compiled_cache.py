"""numba compiles UMAP (and pynndescent) at the first fit in every process: about 10 s on
2 cores, paid by each nightly run, since a process worker starts a fresh process per run. The
compiled code is kept on disk, so a second process loads it instead of compiling."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # two fresh processes, the first one compiles UMAP

# the 2-D picture of every run, then what numba did for UMAP's layout in this process
PICTURE = """
import json
import numpy as np
from decflow.insight import evaluation
from umap.layouts import _nb_optimize_layout_euclidean_single_epoch as layout

Z = np.random.default_rng(0).normal(size=(60, 4))
evaluation.plot_projection(Z, np.arange(60) % 3)
stats = layout.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values())}))
"""


def _picture(cache_dir) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", PICTURE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_umaps_compiled_layout_instead_of_compiling_it(tmp_path):
    first = _picture(tmp_path / "numba")
    assert first == {"hits": 0, "misses": 1}  # compiled, and written to the cache
    assert any(p.suffix == ".nbi" and "layouts" in p.name
               for p in (tmp_path / "numba").rglob("*")), sorted((tmp_path / "numba").rglob("*"))
    assert _picture(tmp_path / "numba") == {"hits": 1, "misses": 0}


# a fit large enough for pynndescent's neighbour search (UMAP computes exact neighbours below
# 4,096 rows); prints the cache files numba wrote in this process
NEIGHBOURS = """
import json, os
import numpy as np
from decflow.model.initialization import fit_view

fit_view(np.random.default_rng(0).normal(size=(5000, 4)).astype(np.float32), 2, 0, 10)
print(json.dumps(sorted(str(p) for p in __import__("pathlib").Path(
    os.environ["NUMBA_CACHE_DIR"]).rglob("*.nbc"))))
"""


def test_a_second_process_adds_no_cache_entries_it_can_never_load(tmp_path):
    """pynndescent passes its distance function to compiled functions as an argument; numba
    keys their cache entries by that function object, which differs in every process, so an
    entry is never found again. Kept anyway, each fitting process (a nightly run's workers and
    its own) added about 1 MB to the cache, without end (38 MB in one checkout)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def entries() -> list[str]:
        done = subprocess.run([sys.executable, "-c", NEIGHBOURS], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = entries()
    assert any("layouts" in p for p in first)  # what can be reused is still kept
    assert entries() == first
