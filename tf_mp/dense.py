"""A dense layer as a `tf.Module`: `kernel` and `bias`, optionally pinned to a device."""

import contextlib
import math
import threading
import zlib
from typing import Callable, Dict, Optional

import tensorflow as tf

# Per-thread device remapping; MirroredStrategy runs each replica in a thread.
_REMAP = threading.local()


def device_scope(device: Optional[str]):
  """`tf.device(device)`, or nothing when `device` is None.

  Inside `remapped_devices(mapping)`, a device named in `mapping` is replaced
  by its entry, so a model built for one device group can run on another.
  """
  mapping = getattr(_REMAP, 'mapping', None)
  if device and mapping:
    device = mapping.get(device, device)
  return tf.device(device) if device else contextlib.nullcontext()


@contextlib.contextmanager
def remapped_devices(mapping: Dict[str, str]):
  """Within the block (this thread only), `device_scope(a)` places on `mapping[a]`.

  Used by the mirrored strategies: each replica runs the same modules, whose
  `device` attributes name the first group, on its own group of devices.
  Keys and values are canonical names (`tf_mp.canonical_device`).
  """
  previous = getattr(_REMAP, 'mapping', None)
  _REMAP.mapping = dict(mapping)
  try:
    yield
  finally:
    _REMAP.mapping = previous


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
