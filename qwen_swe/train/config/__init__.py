"""The run config: its shape and presets (schema.py), how it is built from layers (loader.py), and its checks
(validation.py). What counts as math for a resumed run is run provenance (`qwen_swe.train.provenance`)."""

from .loader import apply_override, coerce, load_config
from .schema import (
    DEFAULT_LORA_TARGETS,
    PRESETS,
    QUALITY_METRICS,
    ConfigError,
    DataSection,
    LoraSection,
    ModelSection,
    ObjectiveSection,
    OptimSection,
    QualitySection,
    RunConfig,
    RunSection,
    ScheduleSection,
    TrainSection,
)
from .validation import validate

__all__ = ["DEFAULT_LORA_TARGETS", "PRESETS", "QUALITY_METRICS", "ConfigError", "DataSection", "LoraSection",
           "ModelSection", "ObjectiveSection", "OptimSection", "QualitySection", "RunConfig", "RunSection",
           "ScheduleSection", "TrainSection", "apply_override", "coerce", "load_config", "validate"]
