"""The configuration's model: ``PipelineConfig`` and its frozen sections, one per layer, with
every key's default, bounds and meaning. Loading (file, environment, overrides) is
``decflow.config.loading``."""

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializationInfo,
                      field_validator, model_serializer, model_validator)

from decflow.redaction import redact, redact_tree


def _count_or_auto(value):
    """An integer >= 1 or "auto" (one message for both, instead of one per union member)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"expected an integer >= 1 or 'auto', found {value!r}")


CountOrAuto = Annotated[int | Literal["auto"], BeforeValidator(_count_or_auto)]


def _anchor(value):
    """An integer >= 0 or "all"."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"expected an integer >= 0 or 'all', found {value!r}")


AnchorUpdates = Annotated[int | Literal["all"], BeforeValidator(_anchor)]

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# The date column becomes a directory name, <date_column>=YYYY-MM-DD: a plain name only.
_PLAIN_NAME = re.compile(r"(?![\d-])[\w-]+")
# Other column names are kept as the table has them, minus what could act as a path or a
# hive key=value in a partition or artifact path.
_BAD_COLUMN = re.compile(r"[/\\=\x00-\x1f\x7f]")


def _check_column(name: str) -> str:
    if not name or name in (".", "..") or _BAD_COLUMN.search(name):
        raise ValueError("expected a column name without '/', '\\', '=' or control "
                         f"characters, not '.' or '..', found {name!r}")
    return name


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_serializer(mode="wrap")
    def _serialize(self, handler, info: SerializationInfo):
        # JSON is what leaves the process (MLflow params and config.yaml, Prefect parameters,
        # deployment parameters): secrets inside URIs never do. Python mode keeps them.
        data = handler(self)
        return redact_tree(data) if info.mode == "json" else data

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, redact(value) if isinstance(value, str) else value


class SourceConfig(_Section):
    """Where the rows come from: a hive-partitioned Parquet dataset (local path or fsspec URI)."""

    uri: str = ".decflow/demo/source"  # dataset root holding <date_column>=YYYY-MM-DD/ folders
    date_column: str = "ds"  # hive partition key
    id_column: str = "id"  # entity id: present, not null, unique within the window
    label_column: str | None = None  # ground truth, used only for evaluation
    window_days: int = Field(default=3, ge=1)  # training window: run date and the days before

    @field_validator("date_column")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _PLAIN_NAME.fullmatch(value):
            raise ValueError("expected a plain name (letters, digits, '_' or '-', not starting "
                             f"with a digit or '-'; it names the partition folders), "
                             f"found {value!r}")
        return value

    @field_validator("id_column", "label_column")
    @classmethod
    def _column_name(cls, value: str | None) -> str | None:
        return value if value is None else _check_column(value)


class FeaturesConfig(_Section):
    """Feature columns by kind and how each kind is encoded."""

    numeric: list[str] = []  # impute (median), centre, scale (numeric_scaling)
    categorical: list[str] = []  # one-hot, with an "unknown" bucket for unseen values
    vector: dict[str, int] = {}  # fixed-length list<float> column -> declared length
    text: list[str] = []  # TF-IDF + truncated SVD (no model download)
    bounds: dict[str, tuple[float | None, float | None]] = {}  # numeric column -> (min, max)
    scale_vectors: bool = False  # standardise vector elements (off: pixels/embeddings as is)
    # How numeric columns are scaled after centring: "column" (each by its own std), "shared"
    # (all by one common scale: columns in one unit keep their relative spread), "auto": shared
    # when no column's std exceeds 10x the median std of the numeric columns, else column.
    numeric_scaling: Literal["auto", "column", "shared"] = "auto"
    # "relevance": each column weighted in [0, 1] by how much of it the other columns predict
    # (label-free; noise columns get 0); "equal": every column weighs as one numeric column
    column_weighting: Literal["relevance", "equal"] = "relevance"
    max_categories: int = Field(default=50, ge=1)  # most frequent kept, the rest -> unknown
    text_components: int = Field(default=32, ge=1)

    @field_validator("numeric", "categorical", "text", "vector")
    @classmethod
    def _column_names(cls, value):
        for name in value:
            _check_column(name)
        return value

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value):
        for name, (lo, hi) in value.items():
            _check_column(name)
            if any(b is not None and math.isnan(b) for b in (lo, hi)):
                raise ValueError(f"{name!r}: expected numbers or null, found min={lo} max={hi}")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{name!r}: expected min <= max, found min={lo} > max={hi}")
        return value

    @model_validator(mode="after")
    def _check(self):
        cols = self.columns()
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:
            raise ValueError(f"feature columns declared under more than one kind: {dup}")
        if not cols:
            raise ValueError("no feature columns declared (numeric, categorical, vector or text)")
        unknown = sorted(set(self.bounds) - set(self.numeric))
        if unknown:
            raise ValueError(f"bounds given for columns that are not numeric features: {unknown}")
        bad = {c: n for c, n in self.vector.items() if n < 1}
        if bad:
            raise ValueError(f"vector lengths must be >= 1, got {bad}")
        return self

    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.vector, *self.text]


class ValidationConfig(_Section):
    """Data checks run before any training or scoring."""

    min_rows: int = Field(default=100, ge=1)
    suite_path: str | None = None  # optional extra GX ExpectationSuite (JSON)
    sample_size: int = Field(default=5, ge=1)  # bad values quoted per failed expectation
    # Where an id must be unique: "window" (tables of events or entities, each row once), or
    # "partition" (daily snapshot tables, where every date repeats the ids of the entities).
    unique_ids: Literal["window", "partition"] = "window"
    # Daily partitions the training window must hold (of source.window_days); None: any number,
    # with a warning naming the missing days. A window of one day where 30 are expected trains
    # a model on one day's mix of rows: set this to refuse such a night.
    min_window_days: int | None = Field(default=None, ge=1)


class ModelConfig(_Section):
    """The DEC model (see ``decflow.DeepEmbeddedClustering``)."""

    n_clusters: int = Field(default=10, ge=2)
    n_components: int = Field(default=10, ge=1)
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default=[500, 500, 2000], min_length=1)
    alpha: float = Field(default=1.0, gt=0)
    gamma: float = Field(default=0.1, ge=0)  # IDEC reconstruction weight; 0 = plain DEC
    input_dropout: float = Field(default=0.2, ge=0, lt=1)
    init: Literal["manifold", "k-means"] = "manifold"
    # where the manifold views are fitted: "auto" (the scaled input when its effective
    # dimension is at most n_components, else the embedding z), "embedding" or "input"
    view_space: Literal["auto", "embedding", "input"] = "auto"
    # UMAP views the manifold initialisation fits; the highest silhouette (label-free) wins
    init_views: int = Field(default=5, ge=1)
    # rows the views are fitted on (a seeded sample); the chosen view places the rest; null: all
    init_view_rows: int | None = Field(default=50000, ge=3)
    # a cluster empty or under this fraction of n/k is degenerate (warned; 0: empty ones only)
    min_cluster_size: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.init_view_rows is not None and self.init_view_rows <= self.n_clusters:
            raise ValueError(f"init_view_rows={self.init_view_rows} must be greater than "
                             f"n_clusters={self.n_clusters}")
        return self


class TrainConfig(_Section):
    """Optimisation settings."""

    pretrain_epochs: CountOrAuto = "auto"
    pretrain_steps: int = Field(default=4500, ge=1)
    pretrain_lr: float = Field(default=1e-3, gt=0)
    warm_start: bool = True  # start from the champion's autoencoder when the schema matches
    warm_start_epochs: CountOrAuto = "auto"  # "auto": a quarter of a full pretraining
    finetune_lr: float = Field(default=1e-4, gt=0)
    # steps between target updates (None: one pass)
    update_interval: int | None = Field(default=None, ge=1)
    tol: float = Field(default=0.001, gt=0, lt=1)  # share of labels that may still change
    # target updates on the initialisation's posteriors before DEC's p(q); "all": throughout
    anchor_updates: AnchorUpdates = "all"
    max_iter: CountOrAuto = "auto"
    batch_size: int = Field(default=256, ge=1)
    max_train_rows: int = Field(default=200_000, ge=1)  # training sample bound; scoring uses all
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N or mps
    # forward pass when scoring, saved with the model version: auto (bf16 on CUDA and on CPUs
    # with bf16 instructions), float32, bfloat16 (DeepEmbeddedClustering.inference_precision)
    inference_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    random_state: int | None = 0

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', "
                             f"found {value!r}")
        return value


class KMeansConfig(_Section):
    """Centroid initialisation over Dask (k-means|| seeding, Lloyd iterations partition-wise)."""

    n_init: int = Field(default=10, ge=1)
    max_iter: int = Field(default=300, ge=1)
    tol: float = Field(default=1e-4, ge=0)
    oversampling_factor: float = Field(default=2.0, gt=0)
    init_rounds: int = Field(default=5, ge=1)
    chunk_rows: int = Field(default=50_000, ge=1)  # rows per Dask partition


class RegistryConfig(_Section):
    """MLflow tracking and model registry."""

    tracking_uri: str | None = None  # None: sqlite:///<home>/mlflow.db
    artifact_location: str | None = None  # None: the server's default, or <home>/mlartifacts
    experiment: str = "decflow"
    model_name: str = "decflow"
    # Browser address of the MLflow UI, for the links from Prefect runs (None: the tracking URI
    # when it is http(s), else http://127.0.0.1:5000 where `decflow ui` serves the local store).
    ui_url: str | None = None
    # How long a gate's or a rollback's alias moves wait for another one on the same model (in
    # processes sharing `home`) before refusing with exit code 5; moves take about a second.
    lock_wait_s: float = Field(default=60.0, ge=0)
    # CPU, memory, disk, network (and GPU, with pynvml) of the machine while a run trains, as
    # MLflow's `system/*` metrics every this many seconds; 0: off.
    system_metrics_s: float = Field(default=10.0, ge=0)

    @field_validator("model_name")
    @classmethod
    def _registry_name(cls, value: str) -> str:
        # MLflow refuses these only at registration, after the whole training
        if not value.strip() or re.search(r"[/:\x00-\x1f\x7f]", value):
            raise ValueError(f"expected a registered model name without '/', ':' or control "
                             f"characters (MLflow's rule), found {value!r}")
        return value


class PromotionConfig(_Section):
    """Champion/challenger gates, evaluated on the same reference rows for both models."""

    auto_promote: bool = True  # the nightly flow runs the gate and promotes a passing challenger
    reference_rows: int = Field(default=5000, ge=10)  # sample of the run's window used to compare
    # Degenerate clusters are refused, unbalanced ones are not (README "Promotion"): every
    # cluster holds at least min_cluster_rows rows and none more than max_cluster_share of them.
    min_cluster_rows: int = Field(default=2, ge=1)  # 0 rows: empty; 1 row: a lone row, no group
    max_cluster_share: float = Field(default=0.99, gt=0, le=1)  # above: collapsed into one
    min_cluster_ratio: float = Field(default=0.0, ge=0)  # optional floor: smallest share >= ratio/k
    max_silhouette_drop: float = Field(default=0.05, ge=0)  # challenger >= champion - margin
    max_confidence_drop: float = Field(default=0.05, ge=0)
    max_supervised_drop: float = Field(default=0.02, ge=0)  # ACC/NMI margin (label column only)
    min_agreement_ari: float | None = None  # optional floor on ARI vs the champion's labels


class BackfillConfig(_Section):
    """Backfill runs over past dates (their concurrency is the Dask cluster's: compute)."""


class MonitoringConfig(_Section):
    """Drift and churn over nights. A night past a threshold stays green: its MLflow run and
    model version are tagged ``monitoring.alert`` and the Prefect run gets a ``drift-warning``
    artifact (the labels are still written; the promotion gates decide what serves)."""

    max_churn: float | None = Field(default=None, ge=0, le=1)  # share of rows whose id changed
    max_size_shift: float | None = Field(default=None, ge=0, le=1)  # TVD of cluster shares
    history_days: int = Field(default=30, ge=1)  # nights in the drift chart and `decflow history`


class LabelsConfig(_Section):
    """Label write-back dataset."""

    uri: str | None = None  # None: <home>/labels


_AUTO_BATCH_VALUES = 1 << 24  # input values per batch under compute.batch_rows: auto


class ComputeConfig(_Section):
    """Where distributed work runs."""

    dask_address: str | None = None  # None: an embedded LocalCluster
    n_workers: int = Field(default=2, ge=1)  # embedded cluster only
    threads_per_worker: int = Field(default=1, ge=1)  # embedded cluster only
    processes: bool = True  # embedded cluster only
    memory_limit: str | None = None  # per embedded worker, e.g. "2GiB" (None: Dask's default)
    # Rows per Dask task (whole row groups). Not above what a 1M-row night gets on 2 threads
    # (125,000: partitions.balanced_chunk_rows), so a worker's peak does not grow with the
    # night: 0.94-1.04 GiB from 1M to 10M rows here, against 1.33 GiB at 10M in chunks of
    # 200,000 (same CPU per row; each chunk is a few more scheduler tasks, about 2 ms each).
    chunk_rows: int = Field(default=100_000, ge=1)
    # Rows decoded, validated and scored at a time in a task; "auto": 2**24 input values (about
    # 64 MB as float32) over the row's width, a power of two in 8,192..262,144
    # (PipelineConfig.batch_rows): 262,144 rows of 62 values, 65,536 of 256, 16,384 of 784.
    batch_rows: CountOrAuto = "auto"


class PipelineConfig(_Section):
    """The whole pipeline; flows take it as their parameter."""

    home: str = ".decflow"
    source: SourceConfig = SourceConfig()
    features: FeaturesConfig = FeaturesConfig(vector={"pixels": 64})
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    kmeans: KMeansConfig = KMeansConfig()
    registry: RegistryConfig = RegistryConfig()
    labels: LabelsConfig = LabelsConfig()
    promotion: PromotionConfig = PromotionConfig()
    backfill: BackfillConfig = BackfillConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    compute: ComputeConfig = ComputeConfig()

    @model_validator(mode="after")
    def _check(self):
        taken = {self.source.id_column, self.source.date_column}
        if self.source.label_column:
            taken.add(self.source.label_column)
        clash = sorted(taken & set(self.features.columns()))
        if clash:
            raise ValueError(f"id/date/label columns cannot also be features: {clash}")
        return self

    # Resolved locations (embedded defaults live under `home`).
    def tracking_uri(self) -> str:
        if self.registry.tracking_uri:
            return self.registry.tracking_uri
        return f"sqlite:///{Path(self.home).resolve() / 'mlflow.db'}"

    def artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: the configured location; with a tracking
        server (http/https) None, the server's own default (e.g. its proxied bucket); else
        ``<home>/mlartifacts``."""
        if self.registry.artifact_location:
            return self.registry.artifact_location
        if self.tracking_uri().startswith(("http://", "https://")):
            return None
        return (Path(self.home).resolve() / "mlartifacts").as_uri()

    def mlflow_ui_url(self) -> str:
        """Where a browser finds this config's MLflow UI (no credentials in it)."""
        uri = self.registry.ui_url or self.tracking_uri()
        if not uri.startswith(("http://", "https://")):
            return "http://127.0.0.1:5000"
        scheme, rest = uri.split("://", 1)
        host, _, path = rest.partition("/")
        return f"{scheme}://{host.rpartition('@')[2]}/{path}".rstrip("/")

    def source_columns(self) -> list[str]:
        """The columns a run reads: the id, the features and (when set) the label column."""
        cols = [self.source.id_column, *self.features.columns()]
        return cols + [self.source.label_column] if self.source.label_column else cols

    def batch_rows(self) -> int:
        """``compute.batch_rows``, with "auto" resolved from the width of a row of input.

        The width counts the values a row brings: one per numeric, categorical or text column
        and each vector's length. A batch's memory in a task (the decoded frame, the encoded
        and scaled copies) grows with rows x width, so wide rows get shorter batches; GX's
        fixed cost per batch (about 0.15 s) favours long ones.
        """
        rows = self.compute.batch_rows
        if rows != "auto":
            return rows
        f = self.features
        width = max(1, len(f.numeric) + len(f.categorical) + len(f.text) + sum(f.vector.values()))
        return 1 << min(18, max(13, (_AUTO_BATCH_VALUES // width).bit_length() - 1))

    def labels_uri(self) -> str:
        return self.labels.uri or str(Path(self.home) / "labels")

    def flatten(self) -> dict[str, str]:
        """``{"model.n_clusters": "10", ...}`` for MLflow params."""
        return {k: json.dumps(v) if not isinstance(v, str) else v
                for k, v in _flatten(self.model_dump(mode="json")).items()}

    def secrets(self) -> list[str]:
        """Dotted keys whose values hold a secret (a URL password or a secret query value)."""
        plain = _flatten(self.model_dump())
        return sorted(k for k, v in plain.items() if isinstance(v, str) and redact(v) != v)

    def digest(self) -> str:
        """Short hash of everything that affects the model (home and locations excluded)."""
        keep = self.model_dump(mode="json", exclude={"home", "registry", "labels", "compute",
                                                     "promotion", "backfill",
                                                     "monitoring"})
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        # Sections are flattened; data maps (vector lengths, bounds) stay one JSON value.
        if isinstance(v, dict) and k not in ("vector", "bounds"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
