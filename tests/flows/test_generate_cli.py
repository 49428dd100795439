"""`decflow generate`: a synthetic source table and a config the pipeline loads."""

import datetime as dt

import pyarrow.parquet as pq
from typer.testing import CliRunner

from decflow.config import load_config
from decflow.data import partitioned
from decflow.flows.cli import app

runner = CliRunner()


def test_generate_writes_partitions_and_a_config(tmp_path):
    out = tmp_path / "src"
    config_path = tmp_path / "conf" / "synthetic.yaml"
    result = runner.invoke(app, ["generate", "--rows", "1200", "--days", "4", "--out-uri", str(out),
                                 "--run-date", "2026-11-21", "--clusters", "5", "--seed", "3",
                                 "--rows-per-group", "100", "--config-out", str(config_path)])
    assert result.exit_code == 0, result.output
    days = [dt.date(2026, 11, d) for d in (18, 19, 20, 21)]
    assert partitioned.list_partitions(str(out), "ds") == days
    assert "wrote 1200 rows in 4 partitions (2026-11-18 .. 2026-11-21)" in result.output
    assert f"{out}/ds=2026-11-21/part-0.parquet  300 rows" in result.output
    meta = pq.ParquetFile(out / "ds=2026-11-21" / "part-0.parquet").metadata
    assert meta.num_row_groups == 3
    labels = partitioned.read_dataset(str(out), "ds")["cluster"]
    assert set(labels) == set(range(5))

    config = load_config(config_path)
    assert config.source.uri == str(out.resolve())
    assert config.source.window_days == 4 and config.source.label_column == "cluster"
    assert config.model.n_clusters == 5
    assert config.features.vector == {"v": 56} and config.features.categorical == ["c0", "c1"]
    assert f"wrote config {config_path}" in result.output


def test_generate_rejects_fewer_rows_than_days(tmp_path):
    result = runner.invoke(app, ["generate", "--rows", "3", "--days", "5",
                                 "--out-uri", str(tmp_path / "src")])
    assert result.exit_code == 2
    assert "--rows 3 is fewer than --days 5" in result.output
    assert not (tmp_path / "src").exists()


def test_generate_rejects_a_bad_end_date(tmp_path):
    result = runner.invoke(app, ["generate", "--rows", "10", "--days", "2", "--out-uri",
                                 str(tmp_path / "src"), "--run-date", "21/11/2026"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
