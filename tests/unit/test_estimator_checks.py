"""scikit-learn's own estimator checks (``sklearn.utils.estimator_checks``) on
``DeepEmbeddedClustering``: the API contract (settings stored by ``__init__``, validation in
``fit``, ``n_features_in_``, clone, pickle, seeded reproducibility, input errors) that
``Pipeline``, ``GridSearchCV`` and ``clone`` rely on.

A tiny network trained for a few steps on CPU: the checks look at the API, not at the quality
of the clusters, and the whole file runs in seconds. ``check_array_api_input`` is skipped by
scikit-learn itself unless SCIPY_ARRAY_API=1 is set before SciPy loads; the estimator computes
in torch and declares no array API support.
"""

import pytest
from sklearn.utils.estimator_checks import (check_dont_overwrite_parameters,
                                            check_fit2d_1feature, check_fit2d_1sample,
                                            check_fit2d_predict1d,
                                            check_methods_subset_invariance,
                                            parametrize_with_checks)

from decflow import DeepEmbeddedClustering

TINY = dict(n_components=2, hidden=(8,), pretrain_epochs=2, max_iter=5, init="k-means",
            n_init=1, batch_size=32, device="cpu", random_state=0)

# These checks set ``n_clusters = 1`` on the estimator before fitting. DEC refuses one cluster
# by design (``n_clusters`` >= 2, as ``ModelConfig`` does): with k = 1 the soft assignment is
# q = 1 for every row, the KL loss is 0 and fine-tuning has nothing to learn. They fail with
# "n_clusters=1 must be an integer >= 2" and run again below with the smallest valid k.
ONE_CLUSTER_CHECKS = [check_dont_overwrite_parameters, check_methods_subset_invariance,
                      check_fit2d_1sample, check_fit2d_1feature, check_fit2d_predict1d]
ONE_CLUSTER = {check.__name__: "sets n_clusters=1, which DEC refuses by design (k >= 2); run "
                               "with k=2 by test_checks_that_ask_for_one_cluster_with_two"
               for check in ONE_CLUSTER_CHECKS}


def expected_failed_checks(estimator) -> dict[str, str]:
    """Check name -> why it cannot pass for DEC (``parametrize_with_checks`` marks them xfail,
    strictly: one that starts passing fails the run, so the list stays true)."""
    return dict(ONE_CLUSTER)


@parametrize_with_checks([DeepEmbeddedClustering(3, **TINY)],
                         expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


class _AtLeastTwoClusters(DeepEmbeddedClustering):
    """``DeepEmbeddedClustering`` that takes ``n_clusters = 1`` from a check as 2, so the checks
    in ``ONE_CLUSTER`` test what they are about (fit only sets trailing-underscore attributes,
    predictions do not depend on the batch, 1-sample / 1-feature / 1-D input) at the smallest
    k DEC accepts."""

    @property
    def n_clusters(self):
        return self._n_clusters

    @n_clusters.setter
    def n_clusters(self, k):
        self._n_clusters = max(k, 2)


@pytest.mark.parametrize("check", ONE_CLUSTER_CHECKS, ids=lambda check: check.__name__)
def test_checks_that_ask_for_one_cluster_with_two(check):
    check("DeepEmbeddedClustering", _AtLeastTwoClusters(3, **TINY))

