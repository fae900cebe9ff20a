"""Training data: the synthetic teacher task, `.npz` files, and which rows each step uses.

Batches are a pure function of the step number (`batch_indices`), so a run
that resumes at step s sees exactly the batches an uninterrupted run would, and
the TF1 reference program can feed the very same rows.
"""

import hashlib
import zipfile
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_mp.checks import non_negative_int, numeric_array, positive_int
from tf_mp.errors import TfMpError
from tf_mp.files import check_input_file
from tf_mp.memory import gib, memory_shortfall

SYNTHETIC_EXAMPLES = 4096


def synthetic_data(seed: int = 0,
                   num_examples: int = SYNTHETIC_EXAMPLES,
                   input_units: int = 128,
                   num_classes: int = 10) -> Tuple[np.ndarray, np.ndarray]:
  """A deterministic task the model can learn: labels of a fixed random linear teacher.

  Returns:
    `x` float32 `[num_examples, input_units]` (standard normal) and `y` int32
    `[num_examples]`, `y = argmax(x @ teacher)` with a standard-normal teacher
    `[input_units, num_classes]`; both determined by `seed`.

  Raises:
    TfMpError: `seed` is not an integer >= 0, or a size is not a positive
      integer.
  """
  seed = non_negative_int('seed', seed)
  num_examples = positive_int('num_examples', num_examples)
  input_units = positive_int('input_units', input_units)
  num_classes = positive_int('num_classes', num_classes)
  # numpy draws float64 before the float32 copy: 12 bytes a value at the peak.
  needed = num_examples * input_units * 12
  available = memory_shortfall(needed)
  if available is not None:
    raise TfMpError(f'synthetic_data of {num_examples:,} x {input_units:,} values needs '
                    f'about {gib(needed)}, more than the {gib(available)} of memory '
                    'available; expected fewer examples or input units')
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_examples, input_units)).astype(np.float32)
  teacher = rng.standard_normal((input_units, num_classes)).astype(np.float32)
  y = np.argmax(x @ teacher, axis=1).astype(np.int32)
  return x, y


def check_arrays(x, y, source: str, input_units: Optional[int] = 128,
                 num_classes: Optional[int] = 10) -> Tuple[np.ndarray, np.ndarray]:
  """Checks features and labels; returns them as float32 and int32.

  `input_units=None` accepts any width; `num_classes=None` any label that
  int32 holds (they are returned as int32: a larger one would wrap around).

  Raises:
    TfMpError: naming `source`, the offending shape or value and what was
      expected: `x` must be finite floats `[n, input_units]`, `y` integers
      `[n]` in [0, num_classes).
  """
  x = _as_array(x, 'x', source)
  y = _as_array(y, 'y', source)
  # Labels are returned as int32: a larger one would wrap around.
  limit = min(num_classes if num_classes is not None else np.inf, np.iinfo(np.int32).max + 1)
  width = x.shape[1] if input_units is None and x.ndim == 2 else input_units
  if x.ndim != 2 or x.shape[1] != width or x.shape[0] < 1:
    raise TfMpError(f"{source}: 'x' has shape {list(x.shape)}; expected "
                    f'[n, {width or "features"}] with n >= 1')
  if not np.issubdtype(x.dtype, np.floating):
    raise TfMpError(f"{source}: 'x' has dtype {x.dtype}; expected float32")
  if y.shape != (x.shape[0],):
    raise TfMpError(f"{source}: 'y' has shape {list(y.shape)}; expected "
                    f'[{x.shape[0]}] (one label per row of x)')
  if not np.issubdtype(y.dtype, np.integer):
    raise TfMpError(f"{source}: 'y' has dtype {y.dtype}; expected integer labels "
                    f'in [0, {limit})')
  with np.errstate(over='ignore'):
    x32 = x.astype(np.float32, copy=False)
  finite = np.isfinite(x32)
  if not finite.all():
    row, col = np.argwhere(~finite)[0]
    beyond = " beyond float32's range" if np.isfinite(x[row, col]) else ''
    raise TfMpError(f"{source}: 'x' contains a non-finite value ({x[row, col]}{beyond}) "
                    f'at row {row}, column {col}; expected finite float32 values')
  bad = (y < 0) | (y >= limit)
  if bad.any():
    row = int(np.argmax(bad))
    raise TfMpError(f"{source}: label {y[row]} at row {row} is outside [0, {limit})"
                    + ('' if num_classes is not None else ' (labels are int32)'))
  return x32, y.astype(np.int32, copy=False)


def _as_array(value, name: str, source: str) -> np.ndarray:
  """`np.asarray(value)`; TfMpError for ragged lists and other non-arrays."""
  try:
    array = np.asarray(value)
  except (ValueError, TypeError) as e:
    raise TfMpError(f'{source}: {name!r} is not a rectangular array of '
                    f'numbers ({type(e).__name__}: rows of different lengths or '
                    'mixed types); expected equal-length rows') from None
  if array.ndim == 0 and array.dtype.kind not in 'biuf':
    # A dataset, a generator, a dict, a ragged or sparse tensor, bytes.
    raise TfMpError(f'{source}: {name!r} is a {type(value).__name__}, not an array; '
                    'expected a numpy array, a tensor or nested lists of numbers')
  return array


def data_identity(x, y) -> str:
  """A short fingerprint of a data set (SHA-256 of shapes, dtypes and bytes).

  Raises TfMpError unless `x` and `y` are arrays of numbers.

  For the run settings of `tf_mp.TrainingCheckpoints`: resuming on other data
  is refused even when the file name is the same.
  """
  x, y = numeric_array("'x'", x), numeric_array("'y'", y)
  digest = hashlib.sha256()
  for array in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
    digest.update(f'{array.dtype.str}{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()[:16]


def load_npz(path: str, input_units: int = 128,
             num_classes: int = 10) -> Tuple[np.ndarray, np.ndarray]:
  """Loads and checks a `.npz` with `x` float32 `[n, 128]` and `y` integer `[n]`.

  Raises:
    TfMpError: the file is missing, not a readable `.npz`, lacks `x` or `y`,
      holds an array larger than the memory, or fails `check_arrays`.
  """
  positive_int('input_units', input_units)
  positive_int('num_classes', num_classes)
  expected = f"expected a .npz with 'x' [n, {input_units}] float32 and 'y' [n] integer"
  path = check_input_file(path, 'data file', expected)
  try:
    # np.load would take a .npy, or suggest allow_pickle for any other file.
    is_zip = zipfile.is_zipfile(path)
  except OSError as e:
    raise TfMpError(f'data file {path!r} cannot be read ({e.strerror})') from None
  if not is_zip:
    raise TfMpError(f'data file {path!r} is not a readable .npz archive (not a zip '
                    f'file, as np.savez writes); {expected}')
  try:
    with np.load(path, allow_pickle=False) as archive:
      missing = [k for k in ('x', 'y') if k not in archive.files]
      if missing:
        raise TfMpError(f'data file {path!r} has arrays {sorted(archive.files)}; '
                        f"expected 'x' [n, {input_units}] float32 and 'y' [n] "
                        'integer')
      x, y = archive['x'], archive['y']
  except TfMpError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise TfMpError(f'data file {path!r} is not a readable .npz archive '
                    f'({type(e).__name__}: {e})') from None
  except MemoryError as e:  # The header's shape, allocated before anything is read.
    raise TfMpError(f'data file {path!r} holds an array larger than the memory '
                    f'available ({e}); expected a data set that fits in memory') from None
  return check_arrays(x, y, f'data file {path!r}', input_units, num_classes)


def batch_indices(step: int, batch_size: int, num_examples: int) -> np.ndarray:
  """Rows used at `step`: `(step * batch_size + arange(batch_size)) % num_examples`."""
  # As Python ints: numpy's uint64 arithmetic with an int gives float64.
  step = non_negative_int('step', step)
  batch_size = positive_int('batch_size', batch_size)
  num_examples = positive_int('num_examples', num_examples)
  check_row_range(step + 1, batch_size)
  return (step * batch_size + np.arange(batch_size)) % num_examples


def check_row_range(steps: int, batch_size: int) -> None:
  """TfMpError unless the rows of `steps` steps of `batch_size` stay within int64."""
  if steps * batch_size > np.iinfo(np.int64).max:
    raise TfMpError(f'step {steps - 1} with batch_size {batch_size} passes row '
                    f'{steps * batch_size:,}, beyond int64; expected '
                    f'step * batch_size below {np.iinfo(np.int64).max:,}')


def batch_at(x: tf.Tensor, y: tf.Tensor, step: tf.Tensor,
             batch_size) -> Tuple[tf.Tensor, tf.Tensor]:
  """`batch_indices` in TensorFlow, for use inside a `tf.function` loop.

  `batch_size` is an int or an int64 scalar tensor (one trace serves any batch size).
  """
  num_examples = tf.shape(x, out_type=tf.int64)[0]
  rows = (tf.cast(step, tf.int64) * batch_size +
          tf.range(batch_size, dtype=tf.int64)) % num_examples
  return tf.gather(x, rows), tf.gather(y, rows)
