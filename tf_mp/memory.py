"""Will a training step fit? The batch size against the data and the machine's memory.

A batch size far beyond what a step can hold does not fail cleanly in
TensorFlow: a tensor of more than 2^31 - 1 elements crashes CPU kernels
(`--batch_size 10000000` ended in a segmentation fault) and a large one ends in
a long `ResourceExhaustedError` after the model was built. `check_batch_fits`
says so in one line before any step runs, from an estimate that needs only the
model's variable shapes.

The estimate (deliberately rough, on the generous side of "plausible"):
every rank-2 variable `[fan_in, width]` makes a `[batch, positions, width]`
activation, kept for the backward pass and matched by its gradient, plus the
gathered batch itself, times `SAFETY` for temporaries; `positions` is 1 for
float features (one row is one example) and the row length for integer
token ids (the tiny LM: every position of a window goes through every layer).
"""

import os
from typing import Optional, Tuple

import numpy as np

from tf_mp.checks import positive_int
from tf_mp.errors import TfMpError

BYTES_PER_VALUE = 4  # float32
SAFETY = 3  # activations, their gradients, temporaries
# The largest tensor TensorFlow's CPU kernels index safely (int32 element counts).
MAX_TENSOR_ELEMENTS = 2**31 - 1


def available_memory_bytes() -> Optional[int]:
  """Memory a new allocation can get now (Linux `MemAvailable`), or None if unknown."""
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def step_memory_estimate(model, batch_size: int, example_shape,
                         token_ids: bool = False) -> Tuple[int, int]:
  """`(bytes, largest tensor's elements)` of one training step, estimated.

  Args:
    model: any `tf.Module` (its trainable variables give the widths).
    batch_size: examples per step.
    example_shape: the shape of one example, e.g. `(128,)` or `(context,)`.
    token_ids: the examples are integer ids (each position runs through the
      model) rather than one float feature vector.
  """
  example_size = int(np.prod(example_shape, dtype=np.int64)) if len(example_shape) else 1
  widths = [int(v.shape[-1]) for v in model.trainable_variables
            if len(v.shape) == 2]
  return activation_estimate(widths, batch_size, example_size,
                             example_size if token_ids else 1)


def activation_estimate(widths, batch_size: int, example_size: int,
                        positions: int) -> Tuple[int, int]:
  """`(bytes, largest tensor's elements)` of a step whose layers have these output widths.

  Each width makes a `[batch, positions, width]` activation (see the module
  docstring); `example_size` values per example are the gathered batch.
  """
  per_example = example_size + positions * sum(widths)
  largest = batch_size * max([example_size] + [positions * w for w in widths])
  return batch_size * per_example * BYTES_PER_VALUE * SAFETY, largest


def check_batch_within(batch_size: int, num_examples: int, where: str = '') -> None:
  """Raises TfMpError if a batch of `batch_size` rows needs more than `num_examples`."""
  if batch_size > num_examples:
    raise TfMpError(f'{where}batch_size {batch_size} is larger than the {num_examples} '
                    f'examples; expected at most {num_examples} (a step would '
                    'use rows more than once)')


def check_batch_fits(model, x, batch_size: int,
                     available_bytes: Optional[int] = None) -> None:
  """Raises TfMpError, before training, if `batch_size` cannot plausibly run.

  Args:
    model: the model to train.
    x: the features (an array or anything with `shape` and `dtype`); rows are
      examples.
    batch_size: examples per step (the global batch with a strategy).
    available_bytes: memory to compare against; default
      `available_memory_bytes()` (the host's; a GPU's memory is not known
      here, so a step that fits the host but not the GPU still fails in
      TensorFlow).

  Raises:
    TfMpError: `batch_size` is larger than the number of examples, makes a
      tensor too large for TensorFlow's kernels, or needs (by the estimate)
      more memory than is available. The message names the numbers.
  """
  batch_size = positive_int('batch_size', batch_size)
  if not hasattr(x, 'shape'):
    x = np.asarray(x)
  shape = tuple(int(d) for d in x.shape)
  num_examples = shape[0] if shape else 0
  check_batch_within(batch_size, num_examples)
  token_ids = np.issubdtype(np.dtype(getattr(x.dtype, 'as_numpy_dtype', x.dtype)),
                            np.integer)
  needed, largest = step_memory_estimate(model, batch_size, shape[1:], token_ids)
  if largest > MAX_TENSOR_ELEMENTS:
    raise TfMpError(f'batch_size {batch_size} makes a tensor of {largest:,} '
                    f'elements, more than TensorFlow handles '
                    f'({MAX_TENSOR_ELEMENTS:,}); expected a batch of at most '
                    f'{batch_size * MAX_TENSOR_ELEMENTS // largest:,}')
  available_bytes = memory_shortfall(needed, available_bytes)
  if available_bytes is not None:
    fits = max(1, batch_size * available_bytes // needed)
    raise TfMpError(f'batch_size {batch_size} needs about {gib(needed)} for one '
                    f'step (estimated), more than the {gib(available_bytes)} of '
                    f'memory available; expected a batch of at most about {fits:,}')


# A variable, Adam's two slots beside it, and its initial value while created.
PARAMETER_COPIES = 4


def check_parameters_fit(count: int, what: str,
                         available_bytes: Optional[int] = None) -> None:
  """Raises TfMpError, before anything is allocated, if `count` parameters cannot fit.

  A layer or model far too large for the machine otherwise fails in
  TensorFlow's random initializer with a long `ResourceExhaustedError` (or
  takes the machine's memory first). The estimate is the float32 parameters
  times `PARAMETER_COPIES` (Adam's slots and the initial values), compared
  with `available_memory_bytes()`; it says nothing of a GPU's memory.

  Args:
    count: the number of float32 parameters.
    what: what holds them, for the message, e.g. 'Dense(1000000, 1000000)'.
    available_bytes: memory to compare against; default
      `available_memory_bytes()`.

  Raises:
    TfMpError: naming `what`, the parameters, the bytes and the memory.
  """
  needed = int(count) * BYTES_PER_VALUE * PARAMETER_COPIES
  available_bytes = memory_shortfall(needed, available_bytes)
  if available_bytes is not None:
    raise TfMpError(f'{what} has {int(count):,} parameters, which need about '
                    f'{gib(needed)} with their optimizer state (estimated), more '
                    f'than the {gib(available_bytes)} of memory available; '
                    'expected smaller widths')


def memory_shortfall(needed: int, available_bytes: Optional[int] = None) -> Optional[int]:
  """The memory available (`available_bytes`, default the host's) when `needed` bytes exceed it, else None."""
  if available_bytes is None:
    available_bytes = available_memory_bytes()
  if available_bytes is not None and needed > available_bytes:
    return available_bytes
  return None


def gib(count: int) -> str:
  return f'{count / 2**30:.1f} GiB'
