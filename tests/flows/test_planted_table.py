"""The reported table through `decflow run` with the default config: three groups 6 standard
deviations apart in two numeric columns, one categorical column drawn at random beside them.
Before column weighting the run labelled by the random column (ARI -0.001 against the groups).
The network is smaller and pretrains for fewer steps than the default, for the test's time
only: what is clustered (column weights, the view space, the views) is decided by the defaults.
"""

import datetime as dt

import numpy as np
import pyarrow as pa
from mlflow import MlflowClient
from typer.testing import CliRunner

from decflow.config import PipelineConfig, dump_config
from decflow.data import partitioned
from decflow.model.metrics import ari
from decflow.flows.cli import app

RUN_DATE = dt.date(2026, 11, 21)


def test_a_random_category_beside_three_groups_does_not_decide_the_labels(tmp_path):
    rng = np.random.default_rng(7)
    n = 600
    groups = rng.integers(0, 3, n)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    ab = centers[groups] + rng.normal(size=(n, 2))
    source = str(tmp_path / "source")
    partitioned.write_partition(source, "ds", RUN_DATE, pa.table({
        "id": np.arange(n, dtype=np.int64), "a": ab[:, 0], "b": ab[:, 1],
        "c": rng.choice(["north", "south", "west"], n)}))
    config = PipelineConfig.model_validate({
        "home": str(tmp_path / "home"),
        "source": {"uri": source, "id_column": "id", "window_days": 1},
        "features": {"numeric": ["a", "b"], "categorical": ["c"]},
        "model": {"n_clusters": 3, "hidden": [128, 128, 256]},
        "train": {"pretrain_steps": 500}})  # everything else: the defaults
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))

    out = CliRunner().invoke(app, ["run", "--config", str(path), "--run-date", str(RUN_DATE)])
    assert out.exit_code == 0, out.output

    labels = partitioned.read_partition(config.labels_uri(), "ds", RUN_DATE).sort_values("id")
    assert len(labels) == n
    assert ari(groups, labels["cluster_id"].to_numpy()) >= 0.95
    client = MlflowClient(config.tracking_uri())
    run = client.search_runs([client.get_experiment_by_name(
        config.registry.experiment).experiment_id], max_results=1)[0]
    assert run.data.metrics["feature_weight.c"] == 0.0
    assert run.data.metrics["feature_weight.a"] == run.data.metrics["feature_weight.b"] == 1.0
    assert run.data.tags["decflow.init_view_space"] == "input"
