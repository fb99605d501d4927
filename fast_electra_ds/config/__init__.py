"""Typed run configuration: what changes the loss curve.

A run is described by a YAML recipe (a bundled name such as `tiny`, or a path) plus `key=value`
overrides on the command line, e.g. `model.hidden_size=512 optim.lr=1e-4`. Speed and memory
settings (ZeRO stage, precision, bucket sizes) live in the DeepSpeed JSON named by `ds_config`,
not here (see training/ds_config.py).

  schema.py   the sections and their fields, each documented by the string under it
              (`field_docs`, `fast-electra config --list`); `save()` writes the resolved config
  loading.py  defaults -> recipe -> overrides, typed; unknown keys named with the nearest ones
  checks.py   `validate()`: ranges and files, one error listing every problem (with the mode's
              own, which method.modes.validate_config adds: config imports only errors.py)
"""

from fast_electra_ds.config.checks import names_a_folder, resolve_path
from fast_electra_ds.config.loading import flatten, list_recipes, load_config, resolve_recipe
from fast_electra_ds.config.schema import (MODES, RECIPE_DIR, REPO_ROOT, SELF_JUDGE,
                                           CheckpointConfig, DataConfig, EvalConfig,
                                           GeneratorConfig, LoggingConfig, MaskingConfig,
                                           ModelConfig, OptimConfig, RunConfig,
                                           TemperatureConfig, TrainConfig, describe, field_docs)

__all__ = ["MODES", "RECIPE_DIR", "REPO_ROOT", "SELF_JUDGE", "CheckpointConfig", "DataConfig",
           "EvalConfig", "GeneratorConfig", "LoggingConfig", "MaskingConfig", "ModelConfig",
           "OptimConfig", "RunConfig", "TemperatureConfig", "TrainConfig", "describe",
           "field_docs", "flatten", "list_recipes", "load_config", "names_a_folder",
           "resolve_path", "resolve_recipe"]
