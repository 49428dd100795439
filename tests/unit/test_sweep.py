"""decflow.insight.sweep and `sweep_k_command`: k ranges, the recommendation rule, sweeps on blobs of
known k, the chart, and the command end to end on a tiny source table.

Sweeps here use init="k-means" or a stand-in for the UMAP view: numba's first UMAP compilation
alone takes longer than this file's budget (benchmarks/sweep_k_demo.py runs the real view).
"""

import json

import numpy as np
import pytest

from decflow.errors import ConfigError, DataError
from decflow.insight.sweep import SweepRow, parse_k_range, recommend_k, run_sweep, sweep_k
from testkit import DAYS, RUN_DATE, tiny_config, write_source

# sweep_k options that keep a sweep quick: the k-means init (no UMAP), 3 restarts.
SWEEP_FAST = dict(init="k-means", n_init=3)


@pytest.fixture(scope="module")
def blobs5():
    """Five well-separated Gaussian blobs in a 6-d embedding, 40 rows each."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    Z = 8.0 * np.eye(5, 6)[y] + rng.normal(size=(len(y), 6))
    return Z.astype(np.float32), y


@pytest.fixture(scope="module")
def swept(blobs5):
    Z, y = blobs5
    return sweep_k(Z, range(2, 9), y=y, **SWEEP_FAST)


def _row(k, silhouette, stability, acc=None):
    return SweepRow(k=k, silhouette=silhouette, silhouette_z=silhouette, stability=stability,
                    smallest_share=0.1, acc=acc, nmi=acc)


# ------------------------------------------------------------------------- k ranges
@pytest.mark.parametrize("text, expected", [
    ("4..16", list(range(4, 17))),
    (" 4 .. 10 .. 2 ", [4, 6, 8, 10]),
    ("4..9..2", [4, 6, 8]),
    ("8,4,6,4", [4, 6, 8]),
    ("3", [3]),
])
def test_parse_k_range(text, expected):
    assert parse_k_range(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("16..4", "is reversed"),
    ("1..5", "k=1"),
    ("0,3", "k=0"),
    ("-2..3", "k=-2"),
    ("4..16..0", "step 0"),
    ("a..b", "not a range"),
    ("4..", "not a range"),
    ("4..8..2..1", "not a range"),
    ("4,,6", "not a list"),
    ("4;6", "not a list"),
])
def test_parse_k_range_errors_name_the_text(text, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_k_range(text)
    assert repr(text) in str(err.value)


# ---------------------------------------------------------------- recommendation rule
def test_rule_takes_the_best_silhouette_among_stable_k():
    rows = [_row(4, 0.90, 0.55), _row(5, 0.70, 0.99), _row(6, 0.60, 0.95)]
    k, reason = recommend_k(rows, min_stability=0.8)
    assert k == 5  # k=4 separates better but changes with the seed
    assert "0.700" in reason and "0.990" in reason and "k=6 at 0.600" in reason


def test_rule_breaks_near_ties_toward_smaller_k():
    rows = [_row(6, 0.800, 0.9), _row(8, 0.805, 0.95), _row(9, 0.70, 0.95)]
    k, reason = recommend_k(rows, min_stability=0.8, silhouette_tol=0.01)
    assert k == 6
    assert "0.805 at k=8" in reason and "within 0.01" in reason
    assert recommend_k(rows, min_stability=0.8, silhouette_tol=0.001)[0] == 8


def test_rule_says_why_not_when_no_k_is_stable():
    rows = [_row(3, 0.9, 0.41), _row(4, 0.8, 0.62), _row(5, 0.7, 0.30)]
    k, reason = recommend_k(rows, min_stability=0.8)
    assert k is None
    assert reason.startswith("No k recommended") and "k=4 at 0.620" in reason


def test_rule_never_reads_labels():
    rows = [_row(4, 0.70, 0.99, acc=0.2), _row(5, 0.60, 0.99, acc=1.0)]
    unlabelled = [_row(4, 0.70, 0.99), _row(5, 0.60, 0.99)]
    assert recommend_k(rows) == recommend_k(unlabelled)
    assert recommend_k(rows)[0] == 4


# ---------------------------------------------------------------------------- sweeps
def test_sweep_recommends_the_true_k_of_blobs(swept):
    assert swept.recommended == 5
    by_k = {r.k: r for r in swept.rows}
    assert by_k[5].stability > 0.99
    assert by_k[5].acc > 0.99 and by_k[5].nmi > 0.97
    assert by_k[5].silhouette == max(r.silhouette for r in swept.rows)
    assert swept.space == "embedding z" and swept.seeds == [0, 1, 2]
    assert "k=5" in swept.reason


def test_acc_and_nmi_only_with_labels(blobs5, swept):
    Z, _ = blobs5
    bare = sweep_k(Z, range(2, 9), **SWEEP_FAST)
    assert list(bare.to_frame().columns) == ["k", "silhouette", "silhouette_z", "stability",
                                             "smallest_share"]
    assert list(swept.to_frame().columns)[-2:] == ["acc", "nmi"]
    assert "ACC" not in bare.to_markdown() and "| ACC | NMI |" in swept.to_markdown()
    assert "acc" not in bare.to_dict()["rows"][0]


def test_labels_do_not_change_the_recommendation(blobs5, swept):
    Z, y = blobs5
    misleading = sweep_k(Z, range(2, 9), y=y // 3, **SWEEP_FAST)  # two classes: ACC best at k=2
    by_k = {r.k: r for r in misleading.rows}
    assert max(by_k, key=lambda k: by_k[k].acc) == 2
    assert misleading.recommended == swept.recommended == 5
    cols = ["silhouette", "silhouette_z", "stability"]
    assert misleading.to_frame()[cols].equals(swept.to_frame()[cols])


def test_missing_labels_are_left_out_of_acc(blobs5, swept):
    Z, y = blobs5
    partial = np.array(y, dtype=object)
    partial[::7] = None
    rows = {r.k: r for r in sweep_k(Z, [5], y=partial, **SWEEP_FAST).rows}
    assert rows[5].acc == pytest.approx({r.k: r for r in swept.rows}[5].acc, abs=0.01)


def test_manifold_sweep_draws_one_view_per_seed(blobs5, monkeypatch):
    import decflow.model.initialization

    calls = []

    def view(Z, n_components, random_state, n_neighbors=20):  # stands in for UMAP
        calls.append((n_components, random_state))
        return np.asarray(Z, dtype=np.float32) * 2.0

    monkeypatch.setattr(decflow.model.initialization, "manifold_view", view)
    Z, _ = blobs5
    result = sweep_k(Z, [4, 5, 6], seeds=2, random_state=7, n_init=3, view_components=8)
    assert calls == [(8, 7), (8, 8)]  # once per seed, shared by every k
    assert result.space == "8-d UMAP view" and result.recommended == 5
    by_k = {r.k: r for r in result.rows}
    assert by_k[5].stability > 0.99
    assert by_k[5].silhouette == pytest.approx(by_k[5].silhouette_z, abs=1e-6)  # a scaled z


def test_sweep_checks_its_arguments(blobs5):
    Z, _ = blobs5
    with pytest.raises(ValueError, match="seeds=1"):
        sweep_k(Z, [3], seeds=1, **SWEEP_FAST)
    with pytest.raises(ValueError, match="n_samples-1=199"):
        sweep_k(Z, [3, 200], **SWEEP_FAST)
    with pytest.raises(ValueError, match="init='kmeans'"):
        sweep_k(Z, [3], init="kmeans")
    with pytest.raises(ValueError, match="y has 3 rows"):
        sweep_k(Z, [3], y=[1, 2, 3], **SWEEP_FAST)


def test_chart_marks_the_recommended_k(swept):
    from matplotlib.figure import Figure

    fig = swept.plot()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3  # silhouette, stability, ACC/NMI
    for ax in fig.axes:
        marks = [line for line in ax.get_lines()
                 if line.get_label() == "recommended k=5"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [5, 5]
    assert "recommended k=5" in fig.get_suptitle()


def test_result_serialises(swept):
    data = json.loads(json.dumps(swept.to_dict(), allow_nan=False))
    assert data["recommended"] == 5 and len(data["rows"]) == 7
    assert data["rule"]["min_stability"] == 0.8
    assert "| **5** |" in swept.to_markdown()


# --------------------------------------------------------------------- end to end
@pytest.fixture
def one_torch_thread():
    """A 32-wide network gains nothing from threads, and on a busy 2-core machine OpenMP's
    waits between tiny kernels make each epoch ~100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
    """The flow tests' tiny source table and config, with the k-means init."""
    root = tmp_path_factory.mktemp("sweep")
    uri = str(root / "source")
    write_source(uri)
    return tiny_config(root / "home", uri, model={"init": "k-means"})


def test_sweep_k_command_writes_table_chart_and_recommendation(sweep_config, tmp_path,
                                                               one_torch_thread):
    from typer.testing import CliRunner

    from decflow.config import dump_config
    from decflow.flows.cli import app

    config = sweep_config
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    out = tmp_path / "out" / "sweep"
    run = CliRunner().invoke(app, ["sweep-k", "--config", str(path), "--k", "2..6", "--seeds",
                                   "2", "--run-date", str(RUN_DATE), "--out-dir", str(out),
                                   "--pretrain-epochs", "30"])
    assert run.exit_code == 0, run.output
    assert sorted(p.name for p in out.iterdir()) == ["sweep_k.json", "sweep_k.md",
                                                     "sweep_k.png"]
    data = json.loads((out / "sweep_k.json").read_text())
    assert data["recommended"] == 4  # four blobs
    assert [r["k"] for r in data["rows"]] == [2, 3, 4, 5, 6]
    assert {"acc", "nmi"} <= set(data["rows"][0])  # the tiny source's `truth` column
    assert data["context"]["sample_rows"] == 270 and data["context"]["pretrain_epochs"] == 30
    assert data["context"]["window"] == f"{DAYS[0]}..{RUN_DATE}"
    assert (out / "sweep_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recommended k = 4" in (out / "sweep_k.md").read_text()
    assert data["reason"] in " ".join(run.output.split())
    # A bad range is a usage error (exit 2) naming it, before any data is read.
    bad = CliRunner().invoke(app, ["sweep-k", "--config", str(path), "--k", "9..4",
                                   "--out-dir", str(tmp_path / "never")])
    assert bad.exit_code == 2 and "k range '9..4' is reversed" in bad.output
    assert not (tmp_path / "never").exists()


def test_failed_write_leaves_no_files(blobs5, tmp_path, monkeypatch):
    from decflow.insight.sweep import SweepResult
    import decflow.insight.sweep_report

    Z, _ = blobs5
    done = sweep_k(Z, [4, 5], **SWEEP_FAST)
    monkeypatch.setattr(decflow.insight.sweep_report, "run_sweep", lambda *a, **kw: done)

    def broken(self):
        raise RuntimeError("no chart today")

    monkeypatch.setattr(SweepResult, "plot", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="no chart today"):
        decflow.insight.sweep_report.sweep_k_command(None, "4,5", None, 3, out, None)
    assert list(out.iterdir()) == []  # neither the JSON nor the Markdown, no temporary folder


@pytest.mark.parametrize("ks, seeds, epochs, message", [
    ("6..2", 3, None, "--k: k range '6..2' is reversed"),
    ("2..6", 1, None, "--seeds: expected an integer >= 2"),
    ("2..6", 3, 0, "--pretrain-epochs: expected an integer >= 1"),
])
def test_command_rejects_bad_options_before_reading(sweep_config, tmp_path, ks, seeds, epochs,
                                                    message):
    from decflow.insight.sweep_report import sweep_k_command

    config = sweep_config
    missing = config.model_copy(update={"source": config.source.model_copy(
        update={"uri": str(tmp_path / "nowhere")})})
    with pytest.raises(ConfigError, match=message):
        sweep_k_command(missing, ks, None, seeds, tmp_path / "out", epochs)
    assert not (tmp_path / "out").exists()


def test_empty_window_is_a_data_error(sweep_config):
    config = sweep_config
    later = RUN_DATE.replace(year=RUN_DATE.year + 1)
    with pytest.raises(DataError, match=f"window .*{later}.* holds no rows"):
        run_sweep(config, [2, 3], run_date=later)
