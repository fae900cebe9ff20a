"""Initial values that depend only on (seed, variable name), never on build order."""

import math
import zlib

import tensorflow as tf


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
