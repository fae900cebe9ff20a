"""A dense layer as a `tf.Module`: `kernel` and `bias`, optionally pinned to a device."""

from typing import Callable, Optional

import tensorflow as tf

from tf_mp.devices import device_scope
from tf_mp.initializers import glorot_uniform


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
    super().__init__(name=name)
    self.input_units = input_units
    self.output_units = output_units
    self.activation = activation
    self.device = device
    with self.name_scope, device_scope(device):
      scope = self.name_scope.name  # e.g. 'sub_model_1/hidden/'
      self.kernel = tf.Variable(
          glorot_uniform([input_units, output_units], seed, scope + 'kernel'),
          name='kernel')
      self.bias = tf.Variable(tf.zeros([output_units]), name='bias')

  @tf.Module.with_name_scope
  def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
    with device_scope(self.device):
      outputs = tf.matmul(inputs, self.kernel) + self.bias
      return self.activation(outputs) if self.activation else outputs
