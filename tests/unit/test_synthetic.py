"""The synthetic source generator: layout, types, determinism, streaming, recoverable clusters."""

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from decflow.config import dump_config, load_config
from decflow.data import partitioned, sources
from decflow.data import synthetic
from decflow.data.synthetic import generate_source, synthetic_config
from decflow.model.features import FeatureEncoder

END = dt.date(2026, 11, 21)
DAYS = [dt.date(2026, 11, 19), dt.date(2026, 11, 20), END]


def _generate(path, **kwargs):
    args = {"rows": 3001, "days": 3, "end_date": END, "rows_per_group": 500, "seed": 0, **kwargs}
    return generate_source(str(path), **args)


def _tables(parts):
    return [pq.read_table(p.path) for p in parts]


def test_partitions_row_counts_and_row_groups(tmp_path):
    parts = _generate(tmp_path / "src")
    assert [p.day for p in parts] == DAYS
    assert [p.rows for p in parts] == [1001, 1000, 1000]  # the remainder goes to the first day
    for p, day in zip(parts, DAYS):
        folder = tmp_path / "src" / f"ds={day.isoformat()}"
        assert p.path == str(folder / "part-0.parquet")
        assert os.listdir(folder) == ["part-0.parquet"]  # the hidden temporary was renamed
        meta = pq.ParquetFile(p.path).metadata
        assert meta.num_rows == p.rows
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sizes == ([500, 500, 1] if p.rows == 1001 else [500, 500])
    assert partitioned.list_partitions(str(tmp_path / "src"), "ds") == DAYS


def test_schema_ids_and_labels(tmp_path):
    tables = _tables(_generate(tmp_path / "src"))
    schema = tables[0].schema
    assert schema.names == ["id", "x0", "x1", "x2", "x3", "c0", "c1", "v", "cluster"]
    assert schema.field("id").type == pa.int64()
    assert all(schema.field(f"x{i}").type == pa.float64() for i in range(4))
    assert all(schema.field(f"c{i}").type == pa.string() for i in range(2))
    assert schema.field("v").type == pa.list_(pa.float32())
    assert schema.field("cluster").type == pa.int32()
    ids = np.concatenate([t["id"].to_numpy() for t in tables])
    assert len(np.unique(ids)) == len(ids) == 3001
    assert set(pc.list_value_length(tables[0]["v"]).to_pylist()) == {56}
    labels = np.concatenate([t["cluster"].to_numpy() for t in tables])
    assert set(labels) == set(range(10))
    assert set(tables[0]["c0"].to_pylist()) <= {f"c0_{j}" for j in range(8)}


def test_same_seed_same_rows_other_seed_other_rows(tmp_path):
    first = _tables(_generate(tmp_path / "a", seed=7))
    again = _tables(_generate(tmp_path / "b", seed=7))
    other = _tables(_generate(tmp_path / "c", seed=8))
    assert all(x.equals(y) for x, y in zip(first, again))
    assert not first[0].drop_columns(["id"]).equals(other[0].drop_columns(["id"]))


def test_rewrite_replaces_and_a_failed_write_keeps_the_old_partition(tmp_path, monkeypatch):
    path = tmp_path / "src"
    _generate(path, seed=1)
    before = _tables(_generate(path, seed=2))  # replaced, not appended
    assert [t.num_rows for t in before] == [1001, 1000, 1000]
    real = synthetic._row_group

    def fail_second_group(*args):
        if args[4] == 1:  # group index
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(synthetic, "_row_group", fail_second_group)
    with pytest.raises(OSError, match="disk full"):
        _generate(path, seed=3)
    folder = path / f"ds={DAYS[0].isoformat()}"
    assert os.listdir(folder) == ["part-0.parquet"]  # no temporary left behind
    assert pq.read_table(folder / "part-0.parquet").equals(before[0])


def test_clusters_are_recoverable_and_not_by_chance(tmp_path):
    def kmeans_ari(path, **kwargs):
        _generate(path, **kwargs)
        frame = partitioned.read_dataset(str(path), "ds")
        X = np.hstack([frame[[f"x{i}" for i in range(4)]].to_numpy(),
                       np.stack(frame["v"].to_numpy())])
        X = StandardScaler().fit_transform(X)
        labels = KMeans(10, n_init=3, random_state=0).fit_predict(X)
        return adjusted_rand_score(frame["cluster"], labels)

    assert kmeans_ari(tmp_path / "mixture") > 0.7  # 0.85 measured
    assert kmeans_ari(tmp_path / "one_blob", separation=0.0) < 0.05  # same noise, no structure


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="rows=2 should be an integer >= days=3"):
        _generate(tmp_path, rows=2)
    with pytest.raises(ValueError, match="rows_per_group=0"):
        _generate(tmp_path, rows_per_group=0)
    with pytest.raises(ValueError, match=r"clashing: \['x0'\]"):
        _generate(tmp_path, label_column="x0")
    assert not os.listdir(tmp_path)


@pytest.mark.slow  # encodes 3,001 wide rows: over 3 s on 2 cores
def test_config_declares_the_generated_features(tmp_path):
    _generate(tmp_path / "src")
    config = synthetic_config(str(tmp_path / "src"), home=str(tmp_path / "home"),
                              window_days=3, train={"max_train_rows": 2000})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    loaded = load_config(path)
    assert loaded == config
    assert loaded.features.vector == {"v": 56}
    assert loaded.source.label_column == "cluster" and loaded.model.n_clusters == 10
    assert loaded.train.max_train_rows == 2000 and loaded.train.batch_size == 256  # merged
    frame, lineage = sources.load_window(loaded.source, END)
    assert lineage.n_rows == 3001
    X = FeatureEncoder(loaded.features).fit_transform(frame)
    assert X.shape == (3001, 4 + 2 * (8 + 1) + 56)  # one-hot with an unknown bucket
