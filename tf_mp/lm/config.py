"""The tiny language model's sizes, and the rule that picks how many devices share it."""

import dataclasses
import math
from typing import Optional, Sequence

from tf_mp.checks import integer, positive_int
from tf_mp.errors import TfMpError
from tf_mp.memory import MAX_TENSOR_ELEMENTS

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
  for t in preferred:
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
