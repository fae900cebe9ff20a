"""Tensor-parallel transformer layers: heads and MLP columns split across devices.

Megatron-LM's pairing, built from `tf.Module`s whose variables are created on
their device and whose calls compute there:

* Attention: device k holds the query, key and value columns of its
  `num_heads / T` heads and the matching rows of the output projection, so it
  computes its heads and a partial `[batch, time, d_model]` output alone.
* MLP: the first projection is column-parallel (device k holds
  `mlp_units / T` columns, the document's sub-model pattern) and the second is
  row-parallel (device k holds the matching rows), so the hidden activations
  never leave their device.

Both layers end the same way: the T partial outputs are added on the output
device, where the residual stream, the layer norms and the output biases live.
That sum is the only communication per layer (Megatron's all-reduce; here a
reduce onto one device). Gathering the hidden columns with a concat and
multiplying by an unsplit second matrix would move `mlp_units` values per
position instead of `d_model`, and put the whole second matrix on one device.

Every sharded variable is a slice of one full matrix (`Shards`); the initial
full matrix depends only on the seed and its unsplit name, so models built with
different T start from the same function.
"""

import dataclasses
import math
import zlib
from typing import List, Optional, Sequence

import tensorflow as tf

from tf_mp.devices import device_scope
from tf_mp.initializers import glorot_uniform


@dataclasses.dataclass
class Shards:
  """One logical weight stored as slices on several devices.

  Attributes:
    name: the weight's name in the unsplit model, e.g.
      'block_0/mlp/hidden/kernel'.
    variables: the slices, shard 0 first (one variable when not split).
    axis: the axis the slices are concatenated on; None when not split.
  """
  name: str
  variables: List[tf.Variable]
  axis: Optional[int]

  @property
  def full_shape(self) -> List[int]:
    shape = list(self.variables[0].shape)
    if self.axis is not None:
      shape[self.axis] = sum(int(v.shape[self.axis]) for v in self.variables)
    return shape


def _normal(shape, seed: int, name: str, stddev: float) -> tf.Tensor:
  return tf.random.stateless_normal(
      shape, seed=[seed, zlib.crc32(name.encode())], stddev=stddev)


def _split_variables(full: tf.Tensor, axis: int, devices: Sequence[Optional[str]],
                     names: Sequence[str]) -> List[tf.Variable]:
  """Cuts `full` into `len(devices)` equal slices on `axis`, one variable each."""
  pieces = tf.split(full, len(devices), axis=axis)
  variables = []
  for piece, device, name in zip(pieces, devices, names):
    with device_scope(device):
      variables.append(tf.Variable(piece, name=name))
  return variables


class LayerNorm(tf.Module):
  """Layer normalisation over the last axis, `[..., units]` -> same shape.

  Devices: variables and computation on `device` (None: not placed).
  """

  def __init__(self, units: int, *, device: Optional[str] = None,
               epsilon: float = 1e-5, name: Optional[str] = None):
    super().__init__(name=name)
    self.device = device
    self.epsilon = epsilon
    with self.name_scope, device_scope(device):
      self.scale = tf.Variable(tf.ones([units]), name='scale')
      self.offset = tf.Variable(tf.zeros([units]), name='offset')

  def shards(self, prefix: str) -> List[Shards]:
    return [Shards(prefix + 'scale', [self.scale], None),
            Shards(prefix + 'offset', [self.offset], None)]

  @tf.Module.with_name_scope
  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    with device_scope(self.device):
      mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
      return (x - mean) * tf.math.rsqrt(variance + self.epsilon) * self.scale + self.offset


class Embedding(tf.Module):
  """Token plus position embeddings: ids `[batch, time]` -> `[batch, time, d_model]`.

  The token lookup is a one-hot matmul so that its gradient is dense (Adam's
  TF1 update is dense). Devices: all on `device`.
  """

  def __init__(self, vocab_size: int, context: int, d_model: int, *,
               device: Optional[str] = None, seed: int = 0,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.device = device
    self.vocab_size = vocab_size
    with self.name_scope, device_scope(device):
      scope = self.name_scope.name
      self.tokens = tf.Variable(
          _normal([vocab_size, d_model], seed, scope + 'tokens', 0.02), name='tokens')
      self.positions = tf.Variable(
          _normal([context, d_model], seed, scope + 'positions', 0.02),
          name='positions')

  def shards(self, prefix: str) -> List[Shards]:
    return [Shards(prefix + 'tokens', [self.tokens], None),
            Shards(prefix + 'positions', [self.positions], None)]

  @tf.Module.with_name_scope
  def __call__(self, ids: tf.Tensor) -> tf.Tensor:
    with device_scope(self.device):
      one_hot = tf.one_hot(ids, self.vocab_size, dtype=tf.float32)
      length = tf.shape(ids)[1]
      return (tf.einsum('btv,vd->btd', one_hot, self.tokens) +
              self.positions[:length])


def causal_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
  """Causal softmax attention; q, k, v `[batch, heads, time, head_units]`."""
  scores = tf.einsum('bhqd,bhkd->bhqk', q, k) / math.sqrt(int(q.shape[-1]))
  length = tf.shape(q)[2]
  mask = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
  scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -1e9))
  return tf.einsum('bhqk,bhkd->bhqd', tf.nn.softmax(scores, axis=-1), v)


class ParallelAttention(tf.Module):
  """Causal self-attention with its heads split over T devices.

  Shapes: `[batch, time, d_model]` -> `[batch, time, d_model]`.
  Devices: device k holds `query/key/value` kernels `[d_model, heads/T *
  head_units]` and an output kernel `[heads/T * head_units, d_model]`, and
  computes its heads there; the partial outputs are summed, and the output
  bias added, on `output_device`.
  Variables: `shard_k/{query,key,value,output}/kernel`, `output_bias`.
  """

  def __init__(self, d_model: int, num_heads: int, devices: Sequence[Optional[str]],
               *, output_device: Optional[str] = None, seed: int = 0,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.devices = list(devices)
    self.output_device = output_device
    self.num_heads = num_heads
    self.heads_per_shard = num_heads // len(self.devices)
    self.head_units = d_model // num_heads
    t = len(self.devices)
    with self.name_scope:
      scope = self.name_scope.name
      self._shards = []
      self.kernels = {}
      for part, axis in (('query', 1), ('key', 1), ('value', 1), ('output', 0)):
        shape = [d_model, d_model]
        full = glorot_uniform(shape, seed, scope + part + '/kernel')
        names = [f'shard_{k}/{part}/kernel' for k in range(t)]
        self.kernels[part] = _split_variables(full, axis, self.devices, names)
        self._shards.append((part + '/kernel', self.kernels[part], axis))
      with device_scope(output_device):
        self.output_bias = tf.Variable(tf.zeros([d_model]), name='output_bias')

  def shards(self, prefix: str) -> List[Shards]:
    return [Shards(prefix + name, variables, axis)
            for name, variables, axis in self._shards] + [
                Shards(prefix + 'output/bias', [self.output_bias], None)]

  def _heads(self, x: tf.Tensor, kernel: tf.Variable) -> tf.Tensor:
    y = tf.einsum('btd,de->bte', x, kernel)
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    y = tf.reshape(y, [batch, length, self.heads_per_shard, self.head_units])
    return tf.transpose(y, [0, 2, 1, 3])

  @tf.Module.with_name_scope
  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    partials = []
    for k, device in enumerate(self.devices):
      with device_scope(device), tf.name_scope(f'shard_{k}'):
        q, key, v = (self._heads(x, self.kernels[part][k])
                     for part in ('query', 'key', 'value'))
        heads = causal_attention(q, key, v)  # [batch, heads/T, time, head_units]
        heads = tf.transpose(heads, [0, 2, 1, 3])
        heads = tf.reshape(heads, [tf.shape(x)[0], tf.shape(x)[1],
                                   self.heads_per_shard * self.head_units])
        partials.append(tf.einsum('bte,ed->btd', heads, self.kernels['output'][k]))
    with device_scope(self.output_device), tf.name_scope('reduce'):
      return tf.add_n(partials) + self.output_bias


class ParallelMLP(tf.Module):
  """`gelu(x @ W1 + b1) @ W2 + b2` with W1 split by columns and W2 by rows.

  Shapes: `[batch, time, d_model]` -> `[batch, time, d_model]`.
  Devices: device k holds `hidden/kernel` `[d_model, mlp_units/T]`,
  `hidden/bias` `[mlp_units/T]` and `output/kernel` `[mlp_units/T, d_model]`
  and computes its slice of the hidden layer and a partial output there; the
  partials are summed, and `output_bias` added, on `output_device`.
  """

  def __init__(self, d_model: int, mlp_units: int, devices: Sequence[Optional[str]],
               *, output_device: Optional[str] = None, seed: int = 0,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.devices = list(devices)
    self.output_device = output_device
    t = len(self.devices)
    with self.name_scope:
      scope = self.name_scope.name
      self.hidden_kernels = _split_variables(
          glorot_uniform([d_model, mlp_units], seed, scope + 'hidden/kernel'), 1,
          self.devices, [f'shard_{k}/hidden/kernel' for k in range(t)])
      self.hidden_biases = _split_variables(
          tf.zeros([mlp_units]), 0, self.devices,
          [f'shard_{k}/hidden/bias' for k in range(t)])
      self.output_kernels = _split_variables(
          glorot_uniform([mlp_units, d_model], seed, scope + 'output/kernel'), 0,
          self.devices, [f'shard_{k}/output/kernel' for k in range(t)])
      with device_scope(output_device):
        self.output_bias = tf.Variable(tf.zeros([d_model]), name='output_bias')

  def shards(self, prefix: str) -> List[Shards]:
    return [Shards(prefix + 'hidden/kernel', self.hidden_kernels, 1),
            Shards(prefix + 'hidden/bias', self.hidden_biases, 0),
            Shards(prefix + 'output/kernel', self.output_kernels, 0),
            Shards(prefix + 'output/bias', [self.output_bias], None)]

  @tf.Module.with_name_scope
  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    partials = []
    for k, device in enumerate(self.devices):
      with device_scope(device), tf.name_scope(f'shard_{k}'):
        hidden = tf.nn.gelu(
            tf.einsum('btd,dh->bth', x, self.hidden_kernels[k]) + self.hidden_biases[k])
        partials.append(tf.einsum('bth,hd->btd', hidden, self.output_kernels[k]))
    with device_scope(self.output_device), tf.name_scope('reduce'):
      return tf.add_n(partials) + self.output_bias


class Block(tf.Module):
  """A pre-norm transformer block: `x + attention(norm(x))`, then `+ mlp(norm(x))`.

  Shapes: `[batch, time, d_model]` -> same. Devices: the residual stream and
  the norms on `output_device`; attention and MLP shards on `devices`.
  """

  def __init__(self, d_model: int, num_heads: int, mlp_units: int,
               devices: Sequence[Optional[str]], *, output_device: Optional[str],
               seed: int = 0, name: Optional[str] = None):
    super().__init__(name=name)
    self.output_device = output_device
    with self.name_scope:
      self.attention_norm = LayerNorm(d_model, device=output_device,
                                      name='attention_norm')
      self.attention = ParallelAttention(d_model, num_heads, devices,
                                         output_device=output_device, seed=seed,
                                         name='attention')
      self.mlp_norm = LayerNorm(d_model, device=output_device, name='mlp_norm')
      self.mlp = ParallelMLP(d_model, mlp_units, devices,
                             output_device=output_device, seed=seed, name='mlp')

  def shards(self, prefix: str) -> List[Shards]:
    return (self.attention_norm.shards(prefix + 'attention_norm/') +
            self.attention.shards(prefix + 'attention/') +
            self.mlp_norm.shards(prefix + 'mlp_norm/') +
            self.mlp.shards(prefix + 'mlp/'))

  @tf.Module.with_name_scope
  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    attended = self.attention(self.attention_norm(x))
    with device_scope(self.output_device):
      x = x + attended
    mixed = self.mlp(self.mlp_norm(x))
    with device_scope(self.output_device):
      return x + mixed
