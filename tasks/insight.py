"""What users look at after a run: cluster profiles (what each cluster is), logged to MLflow and
given to the Prefect run."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from decflow import profiles
from decflow.config import PipelineConfig
from decflow.estimator import DeepEmbeddedClustering

from .runtime import redact_errors
from .tracking import client, log_dict, log_text

PROFILE_DIR = "profiles"


def _short(items: list[dict], render, n: int = 3) -> str:
    return ", ".join(render(item) for item in items[:n])


@task(name="profile_clusters", cache_policy=NO_CACHE)
@redact_errors
def profile_clusters(est: DeepEmbeddedClustering, X: np.ndarray, frame: pd.DataFrame,
                     config: PipelineConfig, run_id: str) -> dict:
    """Profile each cluster of the training rows (after the cluster ids were aligned) and log
    the profiles: ``profiles/cluster_profiles.{json,parquet,md,html}`` in the MLflow run and a
    ``cluster-profiles`` table artifact on the Prefect run.

    Returns:
        ``{"artifact": "runs:/<run_id>/profiles/cluster_profiles.json", "n_clusters": k}``,
        the pointer the registered version carries (tag ``profiles.artifact``).
    """
    ids, conf, dist = est.score_samples(X)
    prof = profiles.cluster_profiles(frame, ids, conf, dist, config.features,
                                     config.source.id_column, config.model.n_clusters)
    log_dict(config, run_id, prof.to_dict(), f"{PROFILE_DIR}/cluster_profiles.json")
    log_text(config, run_id, prof.to_markdown(), f"{PROFILE_DIR}/cluster_profiles.md")
    log_text(config, run_id, prof.to_html(), f"{PROFILE_DIR}/cluster_profiles.html")
    with tempfile.TemporaryDirectory(prefix="decflow-profiles-") as tmp:
        path = Path(tmp) / "cluster_profiles.parquet"
        prof.to_frame().to_parquet(path, index=False)
        client(config).log_artifact(run_id, str(path), PROFILE_DIR)
    table = [{"cluster": c["cluster_id"], "size": c["size"], "share": round(c["share"], 4),
              "mean confidence": (None if c["mean_confidence"] is None
                                  else round(c["mean_confidence"], 3)),
              "sets it apart": _short(c["numeric"], lambda f: f"{f['feature']} "
                                                              f"{f['value']:+.2f}σ"),
              "over-represented": _short(c["categories"], lambda g: f"{g['column']}="
                                                                    f"{g['category']} "
                                                                    f"×{g['lift']:.2g}"),
              "top terms": _short(c["terms"], lambda t: t["term"], 5),
              "exemplar ids": ", ".join(str(e) for e in c["exemplars"])}
             for c in prof.clusters]
    create_table_artifact(key="cluster-profiles", table=table,
                          description=f"What each of the {config.model.n_clusters} clusters is "
                                      f"(training rows, {prof.to_dict()['n_rows']} rows)")
    return {"artifact": f"runs:/{run_id}/{PROFILE_DIR}/cluster_profiles.json",
            "n_clusters": config.model.n_clusters}
