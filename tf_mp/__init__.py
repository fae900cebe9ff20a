"""tf_mp: the model-parallel example of the source document, in TensorFlow 2.

The top level holds the document's model and its training. The rest is one
level down: `tf_mp.distribute` (data parallelism around it), `tf_mp.pipeline`
(the sequential form), `tf_mp.reports`, `tf_mp.compat.v1` (TF1 checkpoints),
`tf_mp.ops` (the optional concat op) and `tf_mp.lm` (a tensor-parallel LM).
"""

from tf_mp import compat, distribute, lm, ops, pipeline, reports
from tf_mp.adam import Adam
from tf_mp.checkpoints import TrainingCheckpoints, resume_training
from tf_mp.data import batch_indices, check_arrays, load_npz, synthetic_data
from tf_mp.dense import Dense
from tf_mp.devices import (available_devices, canonical_device,
                           ensure_logical_cpus, resolve_devices)
from tf_mp.errors import TfMpError, TrainingDivergedError
from tf_mp.export import check_export_dir, export_saved_model
from tf_mp.model import ConcatModel, ModelConfig, SubModelConfig, build_model
from tf_mp.reports.placement import PlacementReport, placement_report
from tf_mp.sub_models import SubModel, sub_model_1, sub_model_2, sub_model_3
from tf_mp.trainer import TrainableModel, Trainer, TrainResult, sparse_softmax_loss
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
    'batch_indices', 'check_arrays', 'load_npz', 'synthetic_data',
    'TrainingCheckpoints', 'resume_training', 'check_export_dir',
    'export_saved_model',
    # Errors.
    'TfMpError', 'TrainingDivergedError',
    # Sub-packages.
    'compat', 'distribute', 'lm', 'ops', 'pipeline', 'reports',
]
