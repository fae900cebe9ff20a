"""The document's sub-models: `sub_model_1`, `sub_model_2`, `sub_model_3`."""

from typing import Optional

import tensorflow as tf

from tf_mp.checks import integer, module_name, positive_int
from tf_mp.dense import Dense
from tf_mp.devices import device_scope
from tf_mp.devices import resolve_devices
from tf_mp.features import check_features  # pylint: disable=unused-import (re-exported)


class SubModel(tf.Module):
  """`hidden` (dense + ReLU) then `output` (dense, no activation), on one device.

  Shapes: `[batch, input_units]` float32 -> `[batch, output_units]` float32.
  Variables: `<name>/hidden/kernel [input_units, hidden_units]`,
  `<name>/hidden/bias [hidden_units]`, `<name>/output/kernel
  [hidden_units, output_units]`, `<name>/output/bias [output_units]`: the TF1
  variable scopes of the document's program, so TF1 checkpoints map by name.
  Devices: with `device` set, the variables live there and the forward pass runs
  there; the backward pass follows when gradients are taken with
  `tf.gradients` (as `tf_mp.Trainer` does), which colocates each gradient op
  with its forward op.
  """

  def __init__(self,
               device: Optional[str] = None,
               *,
               input_units: int = 128,
               hidden_units: int = 256,
               output_units: int = 64,
               seed: int = 0,
               name: str = 'sub_model'):
    super().__init__(name=module_name('SubModel name', name))
    for label, value in (('input_units', input_units),
                         ('hidden_units', hidden_units),
                         ('output_units', output_units)):
      positive_int(f'{name}: {label}', value)
    integer(f'{name}: seed', seed)
    self.device = resolve_devices([device], 1)[0] if device else None
    self.input_units = input_units
    self.output_units = output_units
    with self.name_scope:
      self.hidden = Dense(input_units, hidden_units, tf.nn.relu, device=self.device,
                          seed=seed, name='hidden')
      self.output = Dense(hidden_units, output_units, device=self.device, seed=seed,
                          name='output')

  @tf.Module.with_name_scope
  def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
    check_features(inputs, self.input_units, self.name)
    with device_scope(self.device):
      return self.output(self.hidden(inputs))


def sub_model_1(device: Optional[str] = None,
                *,
                input_units: int = 128,
                hidden_units: int = 256,
                output_units: int = 64,
                seed: int = 0) -> SubModel:
  """Builds the document's `sub_model_1`: a `SubModel` named `sub_model_1`.

  Args:
    device: where its variables and computation live, e.g. "cpu:0" or
      "/device:GPU:0"; None leaves placement to TensorFlow.
    input_units: width of the input (128 in the document).
    hidden_units: width of the ReLU layer.
    output_units: width of the output, joined with the other sub-models'.
    seed: seeds the Glorot-uniform kernels (by variable name).

  Returns:
    A `SubModel` mapping float32 `[batch, input_units]` to
    `[batch, output_units]` on `device`; variables
    `sub_model_1/{hidden,output}/{kernel,bias}`.

  Raises:
    TfMpError: a width is not a positive integer, or the device does not exist.
  """
  return SubModel(device, input_units=input_units, hidden_units=hidden_units,
                  output_units=output_units, seed=seed, name='sub_model_1')


def sub_model_2(device: Optional[str] = None,
                *,
                input_units: int = 128,
                hidden_units: int = 256,
                output_units: int = 64,
                seed: int = 0) -> SubModel:
  """Builds the document's `sub_model_2`: a `SubModel` named `sub_model_2`.

  Args:
    device: where its variables and computation live, e.g. "cpu:1" or
      "/device:GPU:1"; None leaves placement to TensorFlow.
    input_units: width of the input (128 in the document).
    hidden_units: width of the ReLU layer.
    output_units: width of the output, joined with the other sub-models'.
    seed: seeds the Glorot-uniform kernels (by variable name).

  Returns:
    A `SubModel` mapping float32 `[batch, input_units]` to
    `[batch, output_units]` on `device`; variables
    `sub_model_2/{hidden,output}/{kernel,bias}`.

  Raises:
    TfMpError: a width is not a positive integer, or the device does not exist.
  """
  return SubModel(device, input_units=input_units, hidden_units=hidden_units,
                  output_units=output_units, seed=seed, name='sub_model_2')


def sub_model_3(device: Optional[str] = None,
                *,
                input_units: int = 128,
                hidden_units: int = 256,
                output_units: int = 64,
                seed: int = 0) -> SubModel:
  """Builds the document's `sub_model_3`: a `SubModel` named `sub_model_3`.

  Args:
    device: where its variables and computation live, e.g. "cpu:2" or
      "/device:GPU:2"; None leaves placement to TensorFlow.
    input_units: width of the input (128 in the document).
    hidden_units: width of the ReLU layer.
    output_units: width of the output, joined with the other sub-models'.
    seed: seeds the Glorot-uniform kernels (by variable name).

  Returns:
    A `SubModel` mapping float32 `[batch, input_units]` to
    `[batch, output_units]` on `device`; variables
    `sub_model_3/{hidden,output}/{kernel,bias}`.

  Raises:
    TfMpError: a width is not a positive integer, or the device does not exist.
  """
  return SubModel(device, input_units=input_units, hidden_units=hidden_units,
                  output_units=output_units, seed=seed, name='sub_model_3')
