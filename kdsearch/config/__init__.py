"""The study configuration: the schema of study files, loading, overrides and validation.

    cfg = load_config("studies/digits-demo.toml", {"trials": 5, "data.subset": 500})

config.schema holds the sections (pydantic models) and their bounds, config.space the [space]
section, config.load the merging of defaults, file and overrides. Mistakes raise KDSearchError.
"""

from .load import config_from_dict, load_config, validate
from .rules import Bound
from .schema import (BYTES_FORMATS, DATASETS, DEVICES, LATENCY_RUNTIMES, LEGACY_STUDY, LEGACY_TRAIN, NORMALIZE,
                     OBJECTIVES, OPTIMIZERS, PRUNERS, SAMPLERS, SCHEDULES, SECTIONS, TRACKERS, DataConfig, PrunerConfig,
                     StudyConfig, TeacherConfig, TrainConfig, field_rules, trial_meaning_keys)
from .space import DEFAULT_LR, DEFAULT_SPACE, SPACE_KINDS, SPACE_RULES, validate_space

__all__ = ["BYTES_FORMATS", "DATASETS", "DEFAULT_LR", "DEFAULT_SPACE", "DEVICES", "LATENCY_RUNTIMES", "LEGACY_STUDY",
           "LEGACY_TRAIN", "NORMALIZE", "OBJECTIVES", "OPTIMIZERS", "PRUNERS", "SAMPLERS", "SCHEDULES", "SECTIONS",
           "SPACE_KINDS", "SPACE_RULES", "TRACKERS", "DataConfig", "PrunerConfig", "Bound", "StudyConfig", "TeacherConfig",
           "TrainConfig", "config_from_dict", "field_rules", "load_config", "trial_meaning_keys", "validate",
           "validate_space"]
