"""A dense layer as a `tf.Module`: `kernel` and `bias`, optionally pinned to a device."""

import contextlib
import math
import zlib
from typing import Callable, Optional

import tensorflow as tf


def device_scope(device: Optional[str]):
  """`tf.device(device)`, or nothing when `device` is None."""
  return tf.device(device) if device else contextlib.nullcontext()


def glorot_uniform(shape, seed: int, name: str) -> tf.Tensor:
  """Glorot-uniform values, deterministic in (`seed`, `name`).

  Seeding by the variable's name keeps a variable's initial value independent
  of the order in which modules happen to be built.
  """
  fan_in, fan_out = shape
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return tf.random.stateless_uniform(
      shape, seed=[seed, zlib.crc32(name.encode())], minval=-limit,
      maxval=limit, dtype=tf.float32)


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
