"""tf_mp: the model-parallel example of the source document, in TensorFlow 2.

Importing `tf_mp` is cheap: TensorFlow and the modules below load on the first
use of a name (`tf_mp.Trainer`, `from tf_mp import build_model`). That lets a
program (`tf_mp.cli`) set TensorFlow's log level and quiet its C++ start-up
lines before TensorFlow loads.
"""

import importlib


def _import_everything():
  """The package's namespace: imports TensorFlow and every module below."""
  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name
  from tf_mp import lm
  from tf_mp.adam import Adam
  from tf_mp.checkpoints import TrainingCheckpoints, resume_training
  from tf_mp.data import batch_indices, check_arrays, load_npz, synthetic_data
  from tf_mp.dense import Dense
  from tf_mp.devices import (available_devices, canonical_device,
                             ensure_logical_cpus, resolve_devices)
  from tf_mp.errors import TfMpError, TrainingDivergedError
  from tf_mp.export import check_export_dir, export_saved_model
  from tf_mp.lm import LMConfig, LMTrainer, TinyLM, build_lm
  from tf_mp.model import ConcatModel, ModelConfig, SubModelConfig, build_model
  from tf_mp.ops import custom_concat_available, fused_concat
  from tf_mp.pipeline import (Pipeline, PipelineConfig, PipelineStage,
                              build_pipeline, pipeline_stage)
  from tf_mp.pipeline_report import (BalanceReport, DeviceTimeReport,
                                     balance_report, device_time_report,
                                     pipeline_placement)
  from tf_mp.placement import PlacementReport, placement_report
  from tf_mp.strategies import (STRATEGIES, StrategyLayout, WorkerLostError,
                                create_strategy, parse_device_groups,
                                parse_tf_config)
  from tf_mp.sub_models import SubModel, sub_model_1, sub_model_2, sub_model_3
  from tf_mp.tf1_checkpoint import load_tf1_checkpoint, save_tf1_checkpoint
  from tf_mp.trainer import Trainer, TrainResult, sparse_softmax_loss
  globals().update(
      {name: value for name, value in locals().items() if name in __all__})


_importing = []  # Non-empty while _import_everything runs.


def __getattr__(name):
  """A public name imports the whole namespace; `tf_mp.<module>` imports that module."""
  if name.startswith('__'):
    raise AttributeError(f'module tf_mp has no attribute {name!r}')
  if name in __all__ and not _importing:
    _importing.append(name)
    try:
      _import_everything()
    finally:
      _importing.pop()
    return globals()[name]
  try:
    return importlib.import_module(f'{__name__}.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'{__name__}.{name}':
      raise
    raise AttributeError(f'module tf_mp has no attribute {name!r}') from None


def __dir__():
  return sorted(set(globals()) | set(__all__))


__version__ = '0.1.0'

__all__ = [
    # The document's model and its training.
    'ConcatModel', 'Dense', 'ModelConfig', 'SubModel', 'SubModelConfig',
    'build_model', 'sub_model_1', 'sub_model_2', 'sub_model_3',
    'Adam', 'Trainer', 'TrainResult', 'sparse_softmax_loss',
    # Devices and where things live.
    'available_devices', 'canonical_device', 'ensure_logical_cpus',
    'resolve_devices', 'PlacementReport', 'placement_report',
    # Data, export, checkpoints.
    'batch_indices', 'check_arrays', 'load_npz', 'synthetic_data',
    'check_export_dir', 'export_saved_model', 'TrainingCheckpoints',
    'resume_training',
    'load_tf1_checkpoint', 'save_tf1_checkpoint',
    # Errors.
    'TfMpError', 'TrainingDivergedError', 'WorkerLostError',
    # tf.distribute strategies.
    'STRATEGIES', 'StrategyLayout', 'create_strategy', 'parse_device_groups',
    'parse_tf_config',
    # The optional custom concat op.
    'custom_concat_available', 'fused_concat',
    # The pipeline form.
    'Pipeline', 'PipelineConfig', 'PipelineStage', 'build_pipeline',
    'pipeline_stage', 'BalanceReport', 'DeviceTimeReport', 'balance_report',
    'device_time_report', 'pipeline_placement',
    # The tiny language model.
    'lm', 'LMConfig', 'LMTrainer', 'TinyLM', 'build_lm',
]
