"""What decflow records in MLflow, spelled once: the artifact paths of a run and the tag keys of
runs and model versions. Writers (tasks, the registry) and readers (the run report, monitoring,
``decflow history``) use these names; users query the same keys (README "Tags")."""


class Artifact:
    """Paths inside a run's artifacts."""

    CONFIG = "config.yaml"
    VALIDATION = "validation/result.json"
    ALIGNMENT = "alignment/cluster_ids.json"
    PROMOTION = "promotion/decision.json"
    PROFILES = "profiles/cluster_profiles.json"
    DRIFT = "monitoring/drift.json"
    COLUMN_WEIGHTS = "features/column_weights.json"
    REPORT = "report/report.html"  # the run report, logged into its own run
    PLOTS = "plots"  # every picture of the run report, as plots/<name>.png
    SIZES_VS_LAST_NIGHT = "plots/sizes_vs_last_night.png"
    DRIFT_HISTORY = "plots/drift_history.png"
    # inside a logged model's directory: its fitted parts, the files workers rebuild it from
    MODEL_ENCODER = "artifacts/encoder.json"
    MODEL_ESTIMATOR = "artifacts/estimator.safetensors"


class Tag:
    """Tag keys of runs (R), model versions (V) or both."""

    # the run and the code (R)
    FLOW = "decflow.flow"
    RUN_DATE = "decflow.run_date"
    VERSION = "decflow.version"
    CONFIG_DIGEST = "decflow.config_digest"
    HOST = "decflow.host"
    PID = "decflow.pid"
    ERROR = "decflow.error"
    WARM_START = "decflow.warm_start"
    INIT_VIEW_SPACE = "decflow.init_view_space"
    MODEL_VERSION = "decflow.model_version"  # the version this run registered
    CHAMPION_VERSION = "decflow.champion_version"  # the version that labelled the night
    # the Prefect run behind it (R)
    PREFECT_FLOW_NAME = "prefect.flow_name"
    PREFECT_FLOW_RUN_ID = "prefect.flow_run_id"
    PREFECT_FLOW_RUN_NAME = "prefect.flow_run_name"
    PREFECT_FLOW_RUN_URL = "prefect.flow_run_url"
    PREFECT_DEPLOYMENT = "prefect.deployment"
    # the training data (R, V)
    DATA_SOURCE_URI = "data.source_uri"
    DATA_PARTITIONS = "data.partitions"
    DATA_MISSING_PARTITIONS = "data.missing_partitions"
    DATA_N_ROWS = "data.n_rows"
    DATA_DIGEST = "data.digest"
    DATA_RUN_DATE = "data.run_date"
    VALIDATION_SUCCESS = "validation.success"
    VALIDATION_N_EXPECTATIONS = "validation.n_expectations"
    # what the version is and how it was judged (V, some R)
    PROFILES_ARTIFACT = "profiles.artifact"
    ALIGNMENT_MAPPING = "alignment.mapping"
    ALIGNMENT_REFERENCE_VERSION = "alignment.reference_version"
    ALIGNMENT_SKIPPED = "alignment.skipped"
    PROMOTION_DECISION = "promotion.decision"
    PROMOTION_SUMMARY = "promotion.summary"
    PROMOTION_FAILED_GATES = "promotion.failed_gates"
    PROMOTION_NOTES = "promotion.notes"
    PROMOTION_CHAMPION_VERSION = "promotion.champion_version"
    PROMOTION_REFERENCE_ROWS = "promotion.reference_rows"
    PROMOTION_EVALUATED_AT = "promotion.evaluated_at"
    PROMOTION_CONFLICT = "promotion.conflict"
    PROMOTION_ROLLED_BACK_AT = "promotion.rolled_back_at"
    PROMOTION_RESTORED_AT = "promotion.restored_at"
    MANIFEST_ADOPTED_AT = "decflow.manifest_adopted_at"
    # drift (R, V)
    MONITORING_ALERT = "monitoring.alert"
    MONITORING_ALERTS = "monitoring.alerts"
