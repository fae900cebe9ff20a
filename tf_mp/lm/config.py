"""The tiny language model's sizes, and the rule that picks how many devices share it."""

import dataclasses
import math
from typing import Optional, Sequence

from tf_mp.checks import instance_of, integer, positive_int
from tf_mp.errors import TfMpError
from tf_mp.memory import (BYTES_PER_VALUE, MAX_TENSOR_ELEMENTS, activation_estimate,
                          gib, memory_shortfall)

# Preferred tensor-parallel widths, in order: the document's three devices first.
PREFERRED_TENSOR_PARALLEL = (3, 2, 4)


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Sizes of the character-level decoder-only transformer.

  Attributes:
    vocab_size: characters in the vocabulary (logits per position).
    context: the longest sequence the model reads (positions embedded).
    d_model: width of the residual stream.
    num_heads: attention heads per block; `d_model` must divide by it.
    num_blocks: transformer blocks.
    mlp_units: hidden width of each block's MLP (4 * d_model by default).
    seed: seeds the initial weights (deterministic per variable name).
  """
  vocab_size: int = 96
  context: int = 128
  d_model: int = 128
  num_heads: int = 4
  num_blocks: int = 4
  mlp_units: int = 512
  seed: int = 0

  @property
  def head_units(self) -> int:
    return self.d_model // self.num_heads

  @property
  def num_parameters(self) -> int:
    """Weights of the model (the same for every T: shards split them)."""
    d, vocab, mlp = self.d_model, self.vocab_size, self.mlp_units
    # Per block: query, key, value, output [d, d]; MLP [d, mlp], [mlp, d];
    # two norms (scale, offset), two output biases, the MLP's hidden bias.
    per_block = 4 * d * d + 2 * d * mlp + 6 * d + mlp
    # Token and position embeddings, the blocks, the final norm, the head.
    return vocab * d + self.context * d + self.num_blocks * per_block + 2 * d + (d + 1) * vocab

  def check(self) -> None:
    """Raises TfMpError naming the first size that cannot work."""
    for name in ('vocab_size', 'context', 'd_model', 'num_heads', 'num_blocks',
                 'mlp_units'):
      positive_int(f'LMConfig.{name}', getattr(self, name))
    integer('LMConfig.seed', self.seed)
    if self.vocab_size < 2:
      raise TfMpError(f'LMConfig.vocab_size is {self.vocab_size}; expected at '
                      'least 2 characters')
    if self.d_model % self.num_heads:
      raise TfMpError(f'd_model {self.d_model} is not divisible by num_heads '
                      f'{self.num_heads}; expected d_model = num_heads * head width')
    # One window's attention scores are [num_heads, context, context]; beyond
    # TensorFlow's tensor-size limit the first step would crash or run out
    # of memory after the model was built.
    scores = self.num_heads * self.context * self.context
    if scores > MAX_TENSOR_ELEMENTS:
      longest = math.isqrt(MAX_TENSOR_ELEMENTS // self.num_heads)
      raise TfMpError(f'LMConfig.context {self.context} makes attention scores '
                      f'of {scores:,} elements per window ({self.num_heads} '
                      f'heads x {self.context} x {self.context}), more than '
                      f'TensorFlow handles; expected a context of at most {longest:,}')


def default_tensor_parallel(config: LMConfig,
                            preferred: Sequence[int] = PREFERRED_TENSOR_PARALLEL) -> int:
  """The number of devices T that share each block when none is requested.

  The rule: the first of `preferred` (3, then 2, then 4) that divides both
  `num_heads` and `mlp_units`; 1 (no split) when none does. With the default
  4 heads and 512 MLP units that is T = 2; with 6 or 12 heads it is 3.
  """
  instance_of('config', config, LMConfig, 'a tf_mp.lm.LMConfig')
  if isinstance(preferred, str) or not isinstance(preferred, Sequence):
    raise TfMpError(f'preferred must be a sequence of device counts, got {preferred!r}')
  for t in preferred:
    t = positive_int('preferred device count', t)
    if config.num_heads % t == 0 and config.mlp_units % t == 0:
      return t
  return 1


def check_tensor_parallel(config: LMConfig, tensor_parallel: Optional[int]) -> int:
  """Returns T (the default rule when None), checking that heads and MLP divide.

  Raises:
    TfMpError: T is not a positive integer, or `num_heads` or `mlp_units` is
      not divisible by it.
  """
  if tensor_parallel is None:
    return default_tensor_parallel(config)
  t = positive_int('tensor_parallel', tensor_parallel)
  if config.num_heads % t:
    raise TfMpError(f'num_heads {config.num_heads} is not divisible by '
                    f'{t} tensor-parallel devices; expected a divisor of '
                    f'{config.num_heads}')
  if config.mlp_units % t:
    raise TfMpError(f'mlp_units {config.mlp_units} is not divisible by '
                    f'{t} tensor-parallel devices; expected a divisor of '
                    f'{config.mlp_units}')
  return t


# Bytes per weight while training: the value, its gradient and Adam's two slots.
TRAINING_COPIES_PER_WEIGHT = 4


def check_lm_fits(config: LMConfig, batch_size: Optional[int] = None,
                  available_bytes: Optional[int] = None) -> None:
  """Raises TfMpError, before anything is built, if the model cannot plausibly train here.

  A size far too large does not fail cleanly in TensorFlow: `d_model`
  10,000,000 ended in a long `ResourceExhaustedError`, `num_blocks` 100,000
  built for minutes before failing. The estimate (rough, like
  `tf_mp.memory.check_batch_fits`): the weights with their gradients and
  Adam's slots, plus, with `batch_size`, one step's activations (every
  position through every layer, and each block's attention scores).

  Args:
    config: the sizes (checked with `config.check()` first).
    batch_size: windows per step; None checks the weights only.
    available_bytes: default `tf_mp.memory.available_memory_bytes()`.

  Raises:
    TfMpError: a weight or activation is larger than TensorFlow handles, or
      the estimate is larger than the memory available; the message names
      the sizes and the figures.
  """
  config.check()
  d, vocab, mlp, context = config.d_model, config.vocab_size, config.mlp_units, config.context
  weights = {'token embedding': (vocab, d), 'position embedding': (context, d),
             'attention kernel': (d, d), 'MLP kernel': (d, mlp), 'head kernel': (d, vocab)}
  name, shape = max(weights.items(), key=lambda item: item[1][0] * item[1][1])
  if shape[0] * shape[1] > MAX_TENSOR_ELEMENTS:
    raise TfMpError(f'the tiny LM\'s {name} would be {list(shape)}, '
                    f'{shape[0] * shape[1]:,} elements, more than TensorFlow '
                    f'handles ({MAX_TENSOR_ELEMENTS:,}); expected smaller sizes '
                    f'(d_model {d}, mlp_units {mlp}, vocabulary {vocab})')
  needed = config.num_parameters * BYTES_PER_VALUE * TRAINING_COPIES_PER_WEIGHT
  what = f'{config.num_parameters:,} weights with their gradients and Adam slots'
  if batch_size is not None:
    # Each block: query, key, value, attention output, MLP hidden and output,
    # and the attention scores (num_heads x context per position); then the head.
    widths = [d, d] + [d, d, d, d, mlp, d, config.num_heads * context] * config.num_blocks
    step_bytes, largest = activation_estimate(widths + [vocab], batch_size, context, context)
    if largest > MAX_TENSOR_ELEMENTS:
      raise TfMpError(f'batch_size {batch_size} of windows of {context} makes a tensor '
                      f'of {largest:,} elements, more than TensorFlow handles '
                      f'({MAX_TENSOR_ELEMENTS:,}); expected a batch of at most '
                      f'{max(1, batch_size * MAX_TENSOR_ELEMENTS // largest):,}')
    needed += step_bytes
    what += f' and one step of {batch_size} windows'
  available_bytes = memory_shortfall(needed, available_bytes)
  if available_bytes is not None:
    raise TfMpError(f'the tiny LM ({config.num_blocks} blocks, d_model {d}, mlp_units '
                    f'{mlp}, context {context}) needs about {gib(needed)} for its '
                    f'{what} (estimated), more than the {gib(available_bytes)} of '
                    'memory available; expected smaller sizes')
