"""The tiny language model: embedding, tensor-parallel blocks, head; and `build_lm`."""

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tf_mp.checks import instance_of, numeric_array
from tf_mp.dense import Dense
from tf_mp.devices import device_scope
from tf_mp.devices import DeviceSpec, device_list, resolve_devices
from tf_mp.errors import TfMpError
from tf_mp.lm.config import LMConfig, check_lm_fits, check_tensor_parallel
from tf_mp.lm.layers import Block, Embedding, LayerNorm, Shards


class TinyLM(tf.Module):
  """A character-level decoder-only transformer split over T devices.

  Shapes: ids int32 `[batch, time]` (time <= `config.context`) -> logits
  float32 `[batch, time, vocab_size]`; position t sees positions <= t only.
  Devices: each block's attention heads and MLP columns are split over
  `devices` (T of them); the embedding, residual stream, layer norms, head and
  loss live on `output_device` (`devices[0]` unless given).
  Variable names: `tiny_lm/embedding/{tokens,positions}`,
  `tiny_lm/block_i/attention/shard_k/{query,key,value,output}/kernel`,
  `tiny_lm/block_i/mlp/shard_k/{hidden/kernel,hidden/bias,output/kernel}`,
  `.../output_bias`, `.../{attention_norm,mlp_norm}/{scale,offset}`,
  `tiny_lm/final_norm/...`, `tiny_lm/head/{kernel,bias}`.
  """

  def __init__(self, config: LMConfig, devices: List[Optional[str]],
               output_device: Optional[str], name: str = 'tiny_lm'):
    super().__init__(name=name)
    self.config = config
    self.devices = list(devices)
    self.output_device = output_device
    with self.name_scope:
      self.embedding = Embedding(config.vocab_size, config.context, config.d_model,
                                 device=output_device, seed=config.seed,
                                 name='embedding')
      self.blocks = [
          Block(config.d_model, config.num_heads, config.mlp_units, self.devices,
                output_device=output_device, seed=config.seed, name=f'block_{i}')
          for i in range(config.num_blocks)
      ]
      self.final_norm = LayerNorm(config.d_model, device=output_device,
                                  name='final_norm')
      self.head = Dense(config.d_model, config.vocab_size, device=output_device,
                        seed=config.seed, name='head')

  @property
  def input_spec(self) -> tf.TensorSpec:
    """One batch of id windows: int32 `[None, None]` (time <= context)."""
    return tf.TensorSpec([None, None], tf.int32)

  @property
  def label_spec(self) -> tf.TensorSpec:
    """The next-character targets: int32 `[None, None]`, shaped like the inputs."""
    return tf.TensorSpec([None, None], tf.int32)

  @property
  def num_classes(self) -> int:
    return self.config.vocab_size

  def check_data(self, features, labels, source: str):
    """Checks id windows: int `[n, time]`, time <= context, ids in the vocabulary.

    Returns:
      `(features, labels)` as int32 numpy arrays.

    Raises:
      TfMpError: naming `source` and the offending shape or value.
    """
    x, y = np.asarray(features), np.asarray(labels)
    context, vocab = self.config.context, self.config.vocab_size
    if x.ndim != 2 or not 1 <= x.shape[1] <= context or x.shape[0] < 1:
      raise TfMpError(f'{source}: windows have shape {list(x.shape)}; expected '
                      f'[n, time] with n >= 1 and 1 <= time <= context {context}')
    if y.shape != x.shape:
      raise TfMpError(f'{source}: targets have shape {list(y.shape)}; expected '
                      f'{list(x.shape)} like the inputs')
    for name, a in (('inputs', x), ('targets', y)):
      if not np.issubdtype(a.dtype, np.integer):
        raise TfMpError(f'{source}: {name} have dtype {a.dtype}; expected integer ids')
      if a.min() < 0 or a.max() >= vocab:
        bad = a.min() if a.min() < 0 else a.max()
        raise TfMpError(f'{source}: {name} contain id {bad}; expected ids in '
                        f'[0, {vocab})')
    return x.astype(np.int32, copy=False), y.astype(np.int32, copy=False)

  @property
  def tensor_parallel(self) -> int:
    return len(self.devices)

  def shards(self) -> List[Shards]:
    """Every weight, by its unsplit name, with its slices and the split axis."""
    parts = self.embedding.shards('embedding/')
    for i, block in enumerate(self.blocks):
      parts += block.shards(f'block_{i}/')
    parts += self.final_norm.shards('final_norm/')
    parts += [Shards('head/kernel', [self.head.kernel], None),
              Shards('head/bias', [self.head.bias], None)]
    return parts

  def full_weights(self) -> Dict[str, np.ndarray]:
    """The weights as the unsplit model (T = 1) would hold them, by name."""
    weights = {}
    for part in self.shards():
      values = [v.numpy() for v in part.variables]
      weights[part.name] = (values[0] if part.axis is None else
                            np.concatenate(values, axis=part.axis))
    return weights

  def assign_full_weights(self, weights: Dict[str, np.ndarray]) -> None:
    """Sets every weight from unsplit values (e.g. another T's `full_weights()`).

    All or nothing: every value is checked before the first is assigned.

    Raises:
      TfMpError: a name is missing, a shape differs or a value is not finite.
    """
    instance_of('weights', weights, dict, 'a dict of name -> array (TinyLM.full_weights())')
    checked = []
    for part in self.shards():
      if part.name not in weights:
        raise TfMpError(f'weights have no {part.name!r}; expected every name of '
                        'TinyLM.full_weights()')
      value = numeric_array(f'weight {part.name!r}', weights[part.name]).astype(np.float32)
      if list(value.shape) != part.full_shape:
        raise TfMpError(f'weight {part.name!r} has shape {list(value.shape)}; '
                        f'expected {part.full_shape}')
      if not np.isfinite(value).all():
        raise TfMpError(f'weight {part.name!r} holds non-finite values; expected '
                        'finite numbers. Nothing was assigned')
      checked.append((part, value))
    for part, value in checked:
      pieces = ([value] if part.axis is None else
                np.split(value, len(part.variables), axis=part.axis))
      for variable, piece in zip(part.variables, pieces):
        variable.assign(piece)

  def __call__(self, ids) -> tf.Tensor:
    """Logits float32 `[batch, time, vocab_size]` of integer ids `[batch, time]`.

    The ids are checked before any lookup, because an out-of-range id does
    not fail in the embedding (a one-hot of it is all zeros) and would give
    logits without a word: the dtype and the static shape always (when
    tracing too), the values (`0 <= id < vocab_size`) and the length when the
    ids are concrete (numpy, lists, eager tensors). Inside a `tf.function`
    the values are asserted in the graph (`tf.debugging.assert_*`, an
    `InvalidArgumentError` when the step runs); `Trainer.fit`/`train_step`
    check their data before (`check_data`, a `TfMpError`).

    Raises:
      TfMpError: the ids are not integers, not `[batch, time]`, longer than
        `config.context`, or outside `[0, vocab_size)`.
    """
    ids = check_ids(ids, self.config, type(self).__name__)
    x = self.embedding(ids)
    for block in self.blocks:
      x = block(x)
    with device_scope(self.output_device):
      return self.head(self.final_norm(x))


def check_ids(ids, config: LMConfig, where: str):
  """Returns `ids` as an integer tensor `[batch, time]` after the checks `TinyLM` makes.

  Raises:
    TfMpError: naming `where` and the offending dtype, shape or id.
  """
  if not isinstance(ids, (tf.Tensor, tf.Variable)):
    ids = numeric_array(f'{where}: ids', ids, integer_values=True)
  dtype = tf.as_dtype(ids.dtype)
  if dtype not in (tf.int32, tf.int64):
    raise TfMpError(f'{where}: ids have dtype {dtype.name}; expected int32 '
                    f'character ids [batch, time] in [0, {config.vocab_size})')
  shape = tf.TensorShape(ids.shape)
  if shape.rank != 2 or (shape[1] is not None and
                         not 1 <= shape[1] <= config.context):
    raise TfMpError(f'{where}: ids have shape {shape.as_list()}; expected '
                    f'[batch, time] with 1 <= time <= context {config.context}')
  if tf.is_symbolic_tensor(ids):
    # Values are known only when the step runs: assert them in the graph.
    # The asserts cost no measurable time (LMTrainer.fit on CPU, interleaved
    # rounds with and without them: equal within the noise), and the
    # training loop already waits on each step's loss.
    message = f'{where}: ids must be character ids in [0, {config.vocab_size})'
    with tf.control_dependencies([
        tf.debugging.assert_non_negative(ids, message=message),
        tf.debugging.assert_less(ids, tf.cast(config.vocab_size, ids.dtype),
                                 message=message),
        tf.debugging.assert_less_equal(
            tf.shape(ids)[1], config.context,
            message=f'{where}: ids are longer than context {config.context}')]):
      return tf.identity(ids)
  values = ids.numpy() if isinstance(ids, (tf.Tensor, tf.Variable)) else ids
  if values.size and (values.min() < 0 or values.max() >= config.vocab_size):
    bad = values.min() if values.min() < 0 else values.max()
    raise TfMpError(f'{where}: ids contain {bad}; expected character ids in '
                    f'[0, {config.vocab_size})')
  return tf.convert_to_tensor(values) if not isinstance(ids, tf.Tensor) else ids


def build_lm(config: Optional[LMConfig] = None,
             devices: DeviceSpec = 'auto',
             *,
             tensor_parallel: Optional[int] = None,
             output_device: Optional[str] = None) -> TinyLM:
  """Builds the tiny language model split over T devices.

  Args:
    config: an `LMConfig` (its `vocab_size` must match the vocabulary).
    devices: the T devices (`'cpu:0,cpu:1,cpu:2'`, a list; fewer are used
      round-robin), `'auto'` (the GPUs, else T logical CPUs), or None (no
      placement; the shards still exist).
    tensor_parallel: T; by default `default_tensor_parallel(config)` (3, 2 or
      4, the first dividing `num_heads` and `mlp_units`), or the number of
      devices listed when `devices` is a list or comma-separated string.
    output_device: where the embedding, residual stream and head live; default
      the first device.

  Returns:
    A `TinyLM`.

  Raises:
    TfMpError: a size is invalid or too large to build (`check_lm_fits`),
      `num_heads` or `mlp_units` is not divisible by T, or a device does not
      exist.
  """
  config = instance_of('config', LMConfig() if config is None else config,
                       LMConfig, 'a tf_mp.lm.LMConfig')
  config.check()
  check_lm_fits(config)  # The sizes, and the weights against the memory.
  if tensor_parallel is None and devices is not None and not (
      isinstance(devices, str) and devices.strip().lower() == 'auto'):
    tensor_parallel = len(device_list(devices))
  t = check_tensor_parallel(config, tensor_parallel)
  placed = resolve_devices(devices, t, 'shards')
  if output_device is not None:
    output_device = resolve_devices([output_device], 1)[0]
  else:
    output_device = placed[0]
  return TinyLM(config, placed, output_device)
