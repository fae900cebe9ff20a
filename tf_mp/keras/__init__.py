"""tf_mp.keras: model parallelism for Keras 3 on the TensorFlow backend.

  on_device(layer, device)   a layer whose weights and computation live on a device
  Model                      a keras.Model whose fit places the backward pass too
  sub_model_1/2/3, build_model   the document's model as Keras layers / a Model
  StepLogger                 the document's `Step: N Loss: X` lines from fit
  Adam                       Keras's Adam, each update one fused op on its variable's device
  placement_report(model)    where each part really runs, read from the traced step
"""

from tf_mp.keras.layers import (NameSeededGlorotUniform, OnDevice, SubModel,
                                on_device, sub_model_1, sub_model_2,
                                sub_model_3)
from tf_mp.keras.model import (DEFAULT_STEPS_PER_EXECUTION, FunctionalModel,
                               Model, build_model, copy_weights,
                               keras_weights)
from tf_mp.keras.optimizers import Adam
from tf_mp.keras.report import (KerasPartPlacement, KerasPlacementReport,
                                placement_report)
from tf_mp.keras.training import StepLogger, compile_document, step_dataset

__all__ = [
    'on_device', 'OnDevice', 'Model', 'FunctionalModel', 'SubModel',
    'sub_model_1', 'sub_model_2', 'sub_model_3', 'build_model',
    'NameSeededGlorotUniform', 'copy_weights', 'keras_weights', 'StepLogger',
    'step_dataset', 'compile_document', 'placement_report', 'KerasPlacementReport',
    'KerasPartPlacement', 'Adam', 'DEFAULT_STEPS_PER_EXECUTION',
]
