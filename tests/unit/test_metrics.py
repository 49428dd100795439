import numpy as np

from decflow.model.metrics import cluster_accuracy, cluster_size_summary, supervised_scores


def test_accuracy_is_invariant_to_relabelling():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    assert abs(cluster_accuracy(y, np.array([2, 2, 0, 1, 1, 1])) - 5 / 6) < 1e-12
    s = supervised_scores(y, np.array([5, 5, 7, 7, 9, 9]))
    assert s == {"acc": 1.0, "nmi": 1.0, "ari": 1.0}


def test_cluster_size_summary_reports_empty():
    s = cluster_size_summary(np.array([0, 0, 0, 2]), n_clusters=3)
    assert s["sizes"] == [3, 0, 1]
    assert s["n_empty"] == 1
    assert s["min_share"] == 0.0 and s["max_share"] == 0.75
