import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from decflow.insight.evaluation import (cluster_sizes, evaluate, plot_cluster_sizes, plot_confidence,
                                        plot_projection, plot_training_curves)

HISTORY = {"pretrain_loss": [1.0, 0.5, 0.25],
           "finetune": [{"update": 1, "step": 10, "kl": 0.3, "reconstruction": 0.2,
                         "delta_label": 0.05},
                        {"update": 2, "step": 20, "kl": 0.1, "reconstruction": 0.15,
                         "delta_label": 0.0005}]}


@pytest.fixture
def tiny():
    """Three clusters of sizes 5, 3, 2 (cluster 3 of k=4 empty), well separated on a line."""
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    Z = np.c_[labels * 10.0 + np.linspace(0, 0.5, 10), np.zeros(10)]
    confidence = np.linspace(0.5, 1.0, 10)
    return Z, labels, confidence


def test_cluster_sizes_lists_every_id(tiny):
    assert cluster_sizes(tiny[1], 4) == {0: 5, 1: 3, 2: 2, 3: 0}


def test_metrics_on_hand_made_example(tiny):
    Z, labels, conf = tiny
    m = evaluate(Z, labels, conf, n_clusters=3)
    assert set(m) == {"silhouette", "n_clusters_found", "smallest_cluster_share",
                      "smallest_cluster_ratio", "largest_cluster_share", "size_entropy",
                      "mean_confidence"}
    assert all(type(v) is float for v in m.values())
    assert m["n_clusters_found"] == 3.0
    assert m["smallest_cluster_share"] == pytest.approx(0.2)
    assert m["smallest_cluster_ratio"] == pytest.approx(0.6)
    assert m["largest_cluster_share"] == pytest.approx(0.5)
    p = np.array([0.5, 0.3, 0.2])
    assert m["size_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(3))
    assert m["mean_confidence"] == pytest.approx(0.75)
    assert m["silhouette"] > 0.9

    m4 = evaluate(Z, labels, conf, n_clusters=4)  # an empty cluster
    assert m4["n_clusters_found"] == 3.0 and m4["smallest_cluster_share"] == 0.0


def test_history_and_ground_truth_add_metrics(tiny):
    Z, labels, conf = tiny
    y_true = (labels + 1) % 3  # a relabelling: perfect scores
    m = evaluate(Z, labels, conf, 3, history=HISTORY, y_true=y_true)
    assert m["final_pretrain_loss"] == 0.25
    assert m["final_kl"] == 0.1 and m["final_reconstruction"] == 0.15
    assert m["final_delta_label"] == 0.0005 and m["n_target_updates"] == 2.0
    assert (m["acc"], m["nmi"], m["ari"]) == (1.0, 1.0, 1.0)

    empty = evaluate(Z, labels, conf, 3, history={"pretrain_loss": [], "finetune": []})
    assert empty["n_target_updates"] == 0.0 and math.isnan(empty["final_kl"])


def test_single_cluster_gives_nan_silhouette():
    m = evaluate(np.zeros((4, 2)), np.zeros(4, dtype=int), np.ones(4), 2)
    assert math.isnan(m["silhouette"]) and m["smallest_cluster_ratio"] == 0.0


def test_bad_inputs_are_named(tiny):
    Z, labels, conf = tiny
    with pytest.raises(ValueError, match=r"0\.\.1 \(n_clusters=2\), got values in 0\.\.2"):
        evaluate(Z, labels, conf, 2)
    with pytest.raises(ValueError, match="same rows"):
        evaluate(Z[:5], labels, conf, 3)
    with pytest.raises(ValueError, match="y_true has 2 rows"):
        evaluate(Z, labels, conf, 3, y_true=[0, 1])


def test_plots_return_figures_that_save(tiny, tmp_path):
    Z, labels, _ = tiny
    rng = np.random.default_rng(0)
    figs = {
        "curves": plot_training_curves(HISTORY),
        "curves_empty": plot_training_curves({"pretrain_loss": [1.0], "finetune": []}),
        "sizes": plot_cluster_sizes(labels, 4),
        "projection": plot_projection(Z, labels, sample_size=6),
        "projection_1d": plot_projection(Z[:, :1], labels),
        "projection_many": plot_projection(rng.normal(size=(300, 5)), rng.integers(0, 25, 300)),
        "confidence": plot_confidence(rng.uniform(0.25, 1, len(labels)), labels, 4),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=50)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_map_is_umap_with_pca_only_where_umap_cannot_run(tiny):
    rng = np.random.default_rng(1)
    blobs = np.repeat(np.eye(3) * 20, 40, axis=0) + rng.normal(size=(120, 3))
    labels = np.repeat(np.arange(3), 40)
    umap_fig = plot_projection(blobs, labels)
    assert umap_fig.axes[0].get_title() == "embedding, UMAP of 120 rows"
    assert umap_fig.axes[0].get_xlabel() == "UMAP 1"
    # Too few rows, one dimension, or asked for: PCA, and the title says so.
    assert plot_projection(*tiny[:2]).axes[0].get_title() == "embedding, PCA of 10 rows"
    assert plot_projection(blobs[:, :1], labels).axes[0].get_title() == \
        "embedding, PCA of 120 rows"
    assert plot_projection(blobs, labels, method="pca").axes[0].get_xlabel().startswith("PC1")
    with pytest.raises(ValueError, match="method must be 'umap' or 'pca', got 'tsne'"):
        plot_projection(blobs, labels, method="tsne")


def test_the_map_is_drawn_from_coordinates_computed_where_the_caller_says(tiny):
    """``project``: e.g. a Dask worker computes the UMAP map (its compiled code is warm
    there); the figure draws the sample's coordinates it returns, in the sample's order."""
    from decflow.insight.evaluation import umap_2d

    rng = np.random.default_rng(1)
    blobs = np.repeat(np.eye(3) * 20, 40, axis=0) + rng.normal(size=(120, 3))
    labels = np.repeat(np.arange(3), 40)
    calls = []

    def project(Z, seed):
        calls.append((Z.dtype, Z.shape, seed))
        return umap_2d(Z, seed) + 1000.0

    fig = plot_projection(blobs, labels, sample_size=90, random_state=3, project=project)
    assert calls == [(np.float32, (90, 3), 3)]
    drawn = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    assert len(drawn) == 90 and drawn.min() > 900  # its coordinates, not a map made here
    assert fig.axes[0].get_title() == "embedding, UMAP of 90 rows"


def test_confidence_panels_show_the_per_cluster_means(tiny):
    _, labels, conf = tiny
    fig = plot_confidence(conf, labels, 4)
    hist, per_cluster = fig.axes
    assert hist.get_title() == "confidence of 10 rows"
    heights = [bar.get_height() for bar in per_cluster.patches]
    np.testing.assert_allclose(heights, [conf[:5].mean(), conf[5:8].mean(), conf[8:].mean(), 0])
    with pytest.raises(ValueError, match=r"confidence \(3,\) and labels \(10,\)"):
        plot_confidence(conf[:3], labels, 4)
