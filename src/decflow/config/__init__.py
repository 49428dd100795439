"""Pipeline configuration: one pydantic model, ``PipelineConfig``, with a frozen section per layer
(``sections``), loaded from a YAML file, ``DECFLOW_`` environment variables and overrides
(``loading``). Import the names from here: ``from decflow.config import PipelineConfig``."""

from decflow.config.loading import ENV_PREFIX, apply_environment, dump_config, load_config, \
    parse_overrides
from decflow.config.sections import (BackfillConfig, ComputeConfig, FeaturesConfig, KMeansConfig,
                                     LabelsConfig, ModelConfig, MonitoringConfig, PipelineConfig,
                                     PromotionConfig, RegistryConfig, SourceConfig, TrainConfig,
                                     ValidationConfig)

__all__ = ["ENV_PREFIX", "BackfillConfig", "ComputeConfig", "FeaturesConfig", "KMeansConfig",
           "LabelsConfig", "ModelConfig", "MonitoringConfig", "PipelineConfig", "PromotionConfig",
           "RegistryConfig", "SourceConfig", "TrainConfig", "ValidationConfig", "apply_environment",
           "dump_config", "load_config", "parse_overrides"]
