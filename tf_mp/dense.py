"""A dense layer as a `tf.Module`: `kernel` and `bias`, optionally pinned to a device."""

from typing import Callable, Optional

import tensorflow as tf

from tf_mp.checks import integer, module_name, optional_callable, positive_int
from tf_mp.devices import device_scope, resolve_devices
from tf_mp.features import check_features
from tf_mp.initializers import glorot_uniform
from tf_mp.memory import check_parameters_fit


class Dense(tf.Module):
  """`activation(inputs @ kernel + bias)`, float32.

  Shapes: inputs `[batch, input_units]` -> outputs `[batch, output_units]`.
  Devices: with `device` set, the variables are created there and every call
  computes there (inside `tf.function` too). With `device=None` placement is
  left to the enclosing scope.
  """

  def __init__(self,
               input_units: int,
               output_units: int,
               activation: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               *,
               device: Optional[str] = None,
               seed: int = 0,
               name: Optional[str] = None):
    super().__init__(name=module_name('Dense name', name))
    self.input_units = positive_int('Dense input_units', input_units)
    self.output_units = positive_int('Dense output_units', output_units)
    self.activation = optional_callable('Dense activation', activation)
    self.device = resolve_devices([device], 1)[0] if device is not None else None
    integer('Dense seed', seed)
    check_parameters_fit((input_units + 1) * output_units,
                         f'Dense({input_units}, {output_units})')
    with self.name_scope, device_scope(device):
      scope = self.name_scope.name  # e.g. 'sub_model_1/hidden/'
      self.kernel = tf.Variable(
          glorot_uniform([input_units, output_units], seed, scope + 'kernel'),
          name='kernel')
      self.bias = tf.Variable(tf.zeros([output_units]), name='bias')

  @tf.Module.with_name_scope
  def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
    """`activation(inputs @ kernel + bias)`; inputs float32 `[..., input_units]`.

    Raises:
      TfMpError: the inputs are not float32 or their last axis is not
        `input_units` (checked from the static shape, so while tracing too).
    """
    check_features(inputs, self.input_units, self.name, any_rank=True)
    with device_scope(self.device):
      outputs = tf.matmul(inputs, self.kernel) + self.bias
      return self.activation(outputs) if self.activation else outputs
