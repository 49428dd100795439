"""Champion/challenger promotion policy: score both models on the same reference rows, run gates.

Pure library code: nothing here reads or writes the registry (``decflow.registry.aliases`` moves the
aliases) and nothing imports prefect. The gates, in evaluation order:

``validation``     the candidate's data passed validation (version tag ``validation.success``).
``cluster_sizes``  the candidate is not degenerate, judged on the cluster sizes of its training
                   rows (the reference rows when the model carries none): every cluster holds
                   at least ``min_cluster_rows`` rows (no empty or one-row cluster), no cluster
                   holds more than ``max_cluster_share`` of the rows (a collapse), and the
                   smallest share is at least ``min_cluster_ratio`` / k (off by default).
                   Unbalanced sizes are not refused: real groups can be tiny (see
                   ``size_gate``).
``silhouette``     silhouette of the candidate in its own embedding >= the champion's (in the
                   champion's own embedding) - ``max_silhouette_drop``.
``confidence``     mean max_j q_ij >= the champion's - ``max_confidence_drop``.
``agreement_ari``  ARI between the two models' labels of the reference rows; a floor only when
                   ``min_agreement_ari`` is set (reported otherwise), to block a sudden
                   re-segmentation.
``acc``, ``nmi``   with a label column: >= the champion's - ``max_supervised_drop``.

The relative gates (silhouette onwards) need a champion that can score the reference rows;
without one they are replaced by a passing ``comparison`` gate that says why. A candidate that
already is the champion gets a single ``already_champion`` gate and no alias move.
"""

import datetime as dt
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from decflow.config import PromotionConfig
from decflow.model.metrics import ari, cluster_accuracy, nmi, silhouette_sample
from decflow.registry.names import Tag

PROMOTE, REJECT, ALREADY_CHAMPION = "promote", "reject", "already_champion"
TAG_PREFIX = "promotion."
GATE_TAG_PREFIX = "promotion.gate."


# ----------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class ReferenceScores:
    """One model's view of the reference rows.

    Attributes:
        labels: (n,) cluster ids.
        confidence: (n,) max_j q_ij.
        silhouette: in the model's own embedding z (NaN with fewer than two clusters).
        n_clusters: k of the model (empty clusters count).
        training_sizes: (k,) rows per cluster id among the model's training rows, when the
            model carries its training labels (None otherwise).
    """

    labels: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    silhouette: float
    n_clusters: int
    training_sizes: np.ndarray | None = field(default=None, repr=False)

    @property
    def sizes(self) -> np.ndarray:
        """(k,) rows per cluster id."""
        return np.bincount(self.labels, minlength=self.n_clusters)

    @property
    def mean_confidence(self) -> float:
        return float(np.mean(self.confidence))


def reference_sample(frame: pd.DataFrame, n_rows: int, random_state: int = 0) -> pd.DataFrame:
    """A uniform sample of at most ``n_rows`` rows (all of them when fewer), in frame order."""
    if n_rows < 1:
        raise ValueError(f"n_rows={n_rows} should be >= 1")
    if len(frame) <= n_rows:
        return frame
    return frame.sample(n=n_rows, random_state=random_state).sort_index()


def score_reference(encoder, estimator, frame: pd.DataFrame, *, silhouette_rows: int = 5000,
                    random_state: int = 0) -> ReferenceScores:
    """Label the reference rows with one model (its own feature encoder and estimator).

    Args:
        encoder: fitted ``FeatureEncoder``; estimator: fitted ``DeepEmbeddedClustering``.
        frame: (n rows) with the source feature columns.
        silhouette_rows: the silhouette uses at most this many rows; with the same n and
            ``random_state`` two models are measured on the same rows.

    Returns:
        ``ReferenceScores`` for the n rows.
    """
    if len(frame) == 0:
        raise ValueError("no reference rows to score")
    X = encoder.transform(frame)
    labels, confidence, _ = estimator.assign(X)
    labels = np.asarray(labels, dtype=np.int64)
    Z = estimator.transform(X)
    trained = getattr(estimator, "labels_", None)
    return ReferenceScores(
        labels=labels, confidence=np.asarray(confidence, dtype=np.float64),
        silhouette=silhouette_sample(Z, labels, silhouette_rows, random_state),
        n_clusters=int(estimator.n_clusters),
        training_sizes=None if trained is None else np.bincount(
            np.asarray(trained, dtype=np.int64), minlength=int(estimator.n_clusters)))


def missing_columns(encoder, frame: pd.DataFrame) -> list[str]:
    """Feature columns a model's encoder needs that ``frame`` lacks."""
    return [c for c in encoder.schema() if c not in frame.columns]


# ------------------------------------------------------------------------- gates
@dataclass(frozen=True)
class Gate:
    """One promotion check: ``value`` against ``threshold`` (None: reported, no threshold)."""

    name: str
    value: float | str | None
    threshold: float | str | None
    passed: bool
    detail: str = ""

    def to_tag(self) -> str:
        """``"pass value=0.7123 threshold=0.6623 (detail)"``."""
        text = (f"{'pass' if self.passed else 'fail'} value={_fmt(self.value)} "
                f"threshold={_fmt(self.threshold)}")
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class PromotionDecision:
    """The verdict on a candidate and every gate behind it.

    Attributes:
        decision: ``"promote"``, ``"reject"`` or ``"already_champion"``.
        gates: every gate evaluated, in order.
        candidate, champion: version numbers (None where unknown / no champion).
        n_rows: reference rows both models scored.
        evaluated_at: UTC timestamp (ISO 8601).
        notes: warnings that do not change the verdict (e.g. the candidate was rolled back).
    """

    decision: str
    gates: list[Gate]
    candidate: str | None = None
    champion: str | None = None
    n_rows: int = 0
    evaluated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    notes: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        """True when the aliases should move (every gate passed, candidate not yet champion)."""
        return self.decision == PROMOTE

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        """One line, e.g. ``version 3 rejected, champion 2 stays: failed cluster_sizes (...)``."""
        who = f"version {self.candidate}" if self.candidate else "the candidate"
        if self.decision == ALREADY_CHAMPION:
            return f"{who} is already the champion: nothing to move"
        if self.decision == PROMOTE:
            over = f" over champion {self.champion}" if self.champion else ""
            return f"{who} promoted{over}: all {len(self.gates)} gates passed"
        reasons = "; ".join(f"{g.name} value={_fmt(g.value)} threshold={_fmt(g.threshold)}"
                            for g in self.failed)
        stays = f", champion {self.champion} stays" if self.champion else ""
        return f"{who} rejected{stays}: failed {reasons}"

    def to_tags(self) -> dict[str, str]:
        """Model-version tags: ``promotion.decision``, ``promotion.gate.<name>`` and context."""
        tags = {Tag.PROMOTION_DECISION: self.decision,
                Tag.PROMOTION_CHAMPION_VERSION: self.champion or "none",
                Tag.PROMOTION_REFERENCE_ROWS: str(self.n_rows),
                Tag.PROMOTION_EVALUATED_AT: self.evaluated_at,
                Tag.PROMOTION_FAILED_GATES: ",".join(g.name for g in self.failed) or "none",
                Tag.PROMOTION_SUMMARY: self.summary()[:4000],
                Tag.PROMOTION_NOTES: "; ".join(self.notes)[:4000] or "none"}
        tags.update({f"{GATE_TAG_PREFIX}{g.name}": g.to_tag()[:4000] for g in self.gates})
        return tags

    def to_markdown(self) -> str:
        """A heading with the verdict and one table row per gate."""
        rows = "\n".join(
            f"| {g.name} | {'pass' if g.passed else '**fail**'} | {_fmt(g.value)} | "
            f"{_fmt(g.threshold)} | {g.detail.replace('|', '/')} |" for g in self.gates)
        notes = "".join(f"> **Note:** {note}\n\n" for note in self.notes)
        return (f"### Promotion: **{self.decision}**\n\n{self.summary()}\n\n{notes}"
                f"Candidate version {self.candidate or '?'}, champion version "
                f"{self.champion or 'none'}, {self.n_rows} reference rows, evaluated "
                f"{self.evaluated_at}.\n\n"
                f"| gate | result | value | threshold | detail |\n|---|---|---|---|---|\n"
                f"{rows}\n")

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(promote=self.promote, summary=self.summary())
        return out


def already_champion(version: str | None, n_rows: int = 0) -> PromotionDecision:
    """The trivial decision for a candidate that is the champion (e.g. the first version)."""
    gate = Gate("already_champion", version, None, True, "the candidate is the champion")
    return PromotionDecision(ALREADY_CHAMPION, [gate], version, version, n_rows)


def evaluate_gates(champion: ReferenceScores | None, challenger: ReferenceScores,
                   policy: PromotionConfig, n_clusters: int | None = None, *, y_true=None,
                   validation_success: bool | None = None, candidate_version: str | None = None,
                   champion_version: str | None = None,
                   no_champion_reason: str = "no champion to compare with") -> PromotionDecision:
    """Evaluate every gate of the policy; the decision is "promote" only when all pass.

    Args:
        champion: the champion's scores of the reference rows, or None (no champion, or it
            cannot score them: the relative gates are skipped, see ``no_champion_reason``).
        challenger: the candidate's scores of the same rows.
        policy: margins and floors (``PipelineConfig.promotion``).
        n_clusters: k for the size gate (default: the candidate's k).
        y_true: optional (n,) ground truth of the reference rows (rows with a missing value
            are left out); adds the ``acc`` and ``nmi`` gates.
        validation_success: the candidate's validation result (None: unknown, which fails).
        candidate_version, champion_version: version numbers; equal means already champion.

    Returns:
        ``PromotionDecision`` with every gate, evaluated in the order of the module docstring.
    """
    candidate_version = None if candidate_version is None else str(candidate_version)
    champion_version = None if champion_version is None else str(champion_version)
    n = len(challenger.labels)
    if candidate_version is not None and candidate_version == champion_version:
        return already_champion(candidate_version, n)
    if champion is not None and len(champion.labels) != n:
        raise ValueError(f"champion and challenger must score the same rows, got "
                         f"{len(champion.labels)} and {n}")
    k = n_clusters or challenger.n_clusters
    if challenger.training_sizes is not None:
        sizes, rows = challenger.training_sizes, "training rows"
    else:
        sizes, rows = challenger.labels, "reference rows"
        sizes = np.bincount(np.asarray(sizes, dtype=np.int64), minlength=k)
    gates = [_validation_gate(validation_success), size_gate(sizes, policy, rows)]
    if champion is None:
        gates.append(Gate("comparison", "skipped", None, True,
                          f"{no_champion_reason}: relative gates skipped"))
    else:
        gates += [
            _margin_gate("silhouette", challenger.silhouette, champion.silhouette,
                         policy.max_silhouette_drop, "each model in its own embedding"),
            _margin_gate("confidence", challenger.mean_confidence, champion.mean_confidence,
                         policy.max_confidence_drop, "mean max q"),
            _agreement_gate(champion, challenger, policy.min_agreement_ari)]
        gates += _supervised_gates(champion, challenger, y_true, policy.max_supervised_drop)
    decision = PROMOTE if all(g.passed for g in gates) else REJECT
    return PromotionDecision(decision, gates, candidate_version, champion_version, n)


def compare_models(challenger, champion, reference: pd.DataFrame, policy: PromotionConfig, *,
                   label_column: str | None = None, validation_success: bool | None = None,
                   candidate_version: str | None = None, champion_version: str | None = None,
                   random_state: int = 0) -> PromotionDecision:
    """Score the reference rows with both models, then ``evaluate_gates``.

    Args:
        challenger: the candidate's ``(FeatureEncoder, DeepEmbeddedClustering)``.
        champion: the champion's pair, or None when there is no champion.
        reference: rows with the source feature columns (and ``label_column`` if any).
        label_column: ground truth for the ``acc``/``nmi`` gates, used when ``reference`` has it.
        validation_success, candidate_version, champion_version: as in ``evaluate_gates``.
        random_state: seed of the silhouette sample (the same rows for both models).

    Returns:
        ``PromotionDecision``; a champion whose feature columns are missing from
        ``reference`` is not compared (the ``comparison`` gate says so).
    """
    if candidate_version is not None and str(candidate_version) == str(champion_version):
        return already_champion(str(candidate_version), len(reference))
    scores = score_reference(*challenger, reference, random_state=random_state)
    champion_scores, reason = None, "no champion to compare with"
    if champion is not None:
        missing = missing_columns(champion[0], reference)
        if missing:
            reason = f"the champion needs columns the reference rows lack: {missing}"
        else:
            champion_scores = score_reference(*champion, reference, random_state=random_state)
    y = reference[label_column] if label_column and label_column in reference else None
    return evaluate_gates(champion_scores, scores, policy, y_true=y,
                          validation_success=validation_success,
                          candidate_version=candidate_version, champion_version=champion_version,
                          no_champion_reason=reason)


def _validation_gate(success: bool | None) -> Gate:
    if success is None:
        return Gate("validation", "unknown", True, False, "no validation.success tag")
    return Gate("validation", bool(success), True, bool(success))


def size_gate(sizes, policy: PromotionConfig, rows: str = "rows") -> Gate:
    """The ``cluster_sizes`` gate on the rows per cluster id.

    A cluster is degenerate when it holds fewer than ``policy.min_cluster_rows`` rows (empty,
    or a lone row: no group), and the partition has collapsed when one cluster holds more than
    ``policy.max_cluster_share`` of the rows. Unbalanced partitions pass: real tables hold
    groups of a few rows in hundreds of thousands (KDD Cup 99's rarest true class has 2 of
    494,021 rows, Dry Bean's smallest 3.8% with k = 7), and a floor on the share would refuse
    them, and with them every label of a first night. ``policy.min_cluster_ratio`` (> 0) adds
    that floor for tables whose groups are known to be of similar size.

    Args:
        sizes: (k,) rows per cluster id (every id, empty ones as 0).
        policy: ``min_cluster_rows``, ``max_cluster_share``, ``min_cluster_ratio``.
        rows: what the sizes count, for the detail ("training rows").

    Returns:
        ``Gate`` named ``cluster_sizes``: value = the smallest cluster's rows, threshold =
        the fewest rows it must hold; the detail names the smallest and the largest cluster.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    if k < 1 or (sizes < 0).any():
        raise ValueError(f"sizes must be one count >= 0 per cluster, got {sizes.tolist()}")
    n = int(sizes.sum())
    smallest, largest = int(sizes.argmin()), int(sizes.argmax())
    n_empty = int((sizes == 0).sum())
    need = max(int(policy.min_cluster_rows),
               math.ceil(policy.min_cluster_ratio / k * n - 1e-9) if n else 0)
    top_share = float(sizes[largest] / n) if n else 1.0
    small = sizes[smallest] < need
    collapsed = n == 0 or top_share > policy.max_cluster_share
    problems = []
    if n_empty:
        problems.append(f"{n_empty} of {k} clusters empty")
    if small and sizes[smallest] > 0:
        problems.append(f"cluster {smallest} holds {_rows(sizes[smallest])}, fewer than {need}")
    if collapsed:
        problems.append(f"collapsed: cluster {largest} holds {top_share:.1%} of the rows, more "
                        f"than {policy.max_cluster_share:.0%}")
    detail = (f"on {n} {rows}: smallest cluster {smallest} {_rows(sizes[smallest])} "
              f"({int(sizes[smallest]) / max(n, 1):.2%}), largest cluster {largest} "
              f"{top_share:.1%}; {n_empty} of {k} clusters empty")
    if problems:
        detail += "; " + "; ".join(problems)
    return Gate("cluster_sizes", int(sizes[smallest]), need, not (small or collapsed), detail)


def _margin_gate(name: str, value: float, champion_value: float, margin: float,
                 what: str) -> Gate:
    """Candidate >= champion - margin; a NaN candidate fails, a NaN champion sets no bar."""
    if not math.isfinite(champion_value):
        return Gate(name, value, None, math.isfinite(value),
                    f"{what}; champion value {_fmt(champion_value)}: no bar")
    threshold = champion_value - margin
    passed = math.isfinite(value) and value >= threshold
    return Gate(name, value, threshold, passed,
                f"{what}; champion {_fmt(champion_value)}, margin {_fmt(margin)}")


def _agreement_gate(champion: ReferenceScores, challenger: ReferenceScores,
                    floor: float | None) -> Gate:
    value = ari(champion.labels, challenger.labels)
    if floor is None:
        return Gate("agreement_ari", value, None, True,
                    "ARI with the champion's labels; reported only, no floor set")
    return Gate("agreement_ari", value, floor, value >= floor,
                "ARI with the champion's labels")


def _supervised_gates(champion: ReferenceScores, challenger: ReferenceScores, y_true,
                      margin: float) -> list[Gate]:
    if y_true is None:
        return []
    y = pd.Series(np.asarray(y_true, dtype=object))
    keep = y.notna().to_numpy()
    if len(keep) != len(challenger.labels):
        raise ValueError(f"y_true has {len(keep)} rows, the reference {len(challenger.labels)}")
    if not keep.any():
        return []
    y = y[keep].astype(str).to_numpy()
    gates = []
    for name, score in (("acc", cluster_accuracy), ("nmi", nmi)):
        gates.append(_margin_gate(name, score(y, challenger.labels[keep]),
                                  score(y, champion.labels[keep]), margin,
                                  f"against the label column on {int(keep.sum())} rows"))
    return gates


def _rows(count) -> str:
    return f"{int(count)} row" + ("" if int(count) == 1 else "s")


def _fmt(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)
