"""Each run starts one Dask cluster, whatever its steps: the nightly's validation, k-means and
labelling, a score's labelling, and a backfill's days (``engine.compute.run_cluster``)."""

import datetime as dt

import distributed
import pytest

from decflow.flows.backfill import backfill
from decflow.flows.recluster import recluster
from decflow.flows.score import score
from flowkit import RUN_DATE, tiny_config, write_source


@pytest.fixture
def cluster_starts(monkeypatch):
    """Every embedded cluster started, by the settings it was started with."""
    started = []

    class Counted(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            started.append(kwargs.get("n_workers"))
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(distributed, "LocalCluster", Counted)
    return started


def test_each_run_starts_one_cluster_for_all_its_steps(tmp_path, cluster_starts):
    source = str(tmp_path / "src")
    write_source(source)
    config = tiny_config(tmp_path / "home", source)

    night = recluster(config=config, run_date=RUN_DATE)
    assert night["labels"]["rows"] > 0 and night["metrics"]
    assert cluster_starts == [1], "validation, k-means and labelling share one cluster"

    cluster_starts.clear()
    out = score(config=config, run_date=RUN_DATE, model="champion")
    assert out["rows"] == night["labels"]["rows"]
    assert cluster_starts == [1]

    cluster_starts.clear()
    days = backfill(config=config, start=RUN_DATE - dt.timedelta(days=2), end=RUN_DATE,
                    force=True)
    assert [d["status"] for d in days] == ["labelled"] * 3
    assert cluster_starts == [1]
