"""tf_mp: the model-parallel example of the source document, in TensorFlow 2.

The top level holds the document's model and its training. The rest is one
level down: `tf_mp.distribute` (data parallelism around it), `tf_mp.pipeline`
(the sequential form), `tf_mp.reports`, `tf_mp.compat.v1` (TF1 checkpoints),
`tf_mp.ops` (the optional concat op), `tf_mp.lm` (a tensor-parallel LM) and
`tf_mp.keras` (the same placement for Keras 3 models).

Importing `tf_mp` is cheap: TensorFlow and the modules below load on the first
use of a name (`tf_mp.Trainer`, `from tf_mp import build_model`,
`tf_mp.distribute`). That lets a program (`tf_mp.cli`) set TensorFlow's log
level and quiet its C++ start-up lines before TensorFlow loads.
"""

from tf_mp.lazy import import_submodule

from tf_mp.version import __version__

__all__ = [
    # The document's model.
    'ConcatModel', 'Dense', 'ModelConfig', 'SubModel', 'SubModelConfig',
    'build_model', 'sub_model_1', 'sub_model_2', 'sub_model_3',
    # Its training.
    'Adam', 'TrainableModel', 'Trainer', 'TrainResult', 'sparse_softmax_loss',
    # Devices and where things live.
    'available_devices', 'canonical_device', 'ensure_logical_cpus',
    'resolve_devices', 'PlacementReport', 'placement_report',
    # Data, checkpoints, export.
    'batch_indices', 'check_arrays', 'data_identity', 'load_npz',
    'synthetic_data', 'TrainingCheckpoints', 'resume_training',
    'check_export_dir', 'export_saved_model',
    # Errors.
    'TfMpError', 'TrainingDivergedError',
]

# Sub-packages, each imported on first use: `tf_mp.distribute.create_strategy`.
SUBPACKAGES = ('compat', 'distribute', 'keras', 'lm', 'ops', 'pipeline', 'reports')


def _import_core():
  """The top-level names: imports TensorFlow and the core modules."""
  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name
  from tf_mp.adam import Adam
  from tf_mp.checkpoints import TrainingCheckpoints, resume_training
  from tf_mp.data import (batch_indices, check_arrays, data_identity, load_npz,
                          synthetic_data)
  from tf_mp.dense import Dense
  from tf_mp.devices import (available_devices, canonical_device,
                             ensure_logical_cpus, resolve_devices)
  from tf_mp.errors import TfMpError, TrainingDivergedError
  from tf_mp.export import check_export_dir, export_saved_model
  from tf_mp.model import ConcatModel, ModelConfig, SubModelConfig, build_model
  from tf_mp.reports.placement import PlacementReport, placement_report
  from tf_mp.sub_models import SubModel, sub_model_1, sub_model_2, sub_model_3
  from tf_mp.trainer import TrainableModel, Trainer, TrainResult, sparse_softmax_loss
  globals().update(
      {name: value for name, value in locals().items() if name in __all__})


_importing = []  # Non-empty while _import_core runs.


def __getattr__(name):
  """A top-level name imports the core; `tf_mp.<module>` imports that module."""
  if name.startswith('__'):
    raise AttributeError(f'module tf_mp has no attribute {name!r}')
  if name in __all__ and not _importing:
    _importing.append(name)
    try:
      _import_core()
    finally:
      _importing.pop()
    return globals()[name]
  return import_submodule(__name__, name)


def __dir__():
  return sorted(set(globals()) | set(__all__) | set(SUBPACKAGES))
