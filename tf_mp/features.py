"""What a batch of float features must be: one check shared by every layer and model."""

import tensorflow as tf

from tf_mp.checks import short_repr
from tf_mp.errors import TfMpError


def check_features(inputs, input_units: int, where: str,
                   any_rank: bool = False) -> None:
  """Raises TfMpError unless `inputs` is float32 `[batch, input_units]` (batch may be unknown).

  With `any_rank`, any rank >= 2 whose last axis is `input_units` passes
  (`[batch, time, input_units]` for a layer applied at every position).

  Other dtypes are refused rather than cast: float64 would silently lose
  precision and integers are usually a mistake (labels passed as features).
  Python lists of numbers are accepted as float32, as `tf.constant` would.
  """
  dtype = getattr(inputs, 'dtype', None)
  if dtype is None:
    try:
      inputs = tf.convert_to_tensor(inputs, tf.float32)
    except (TypeError, ValueError) as e:
      raise TfMpError(f'{where}: inputs {short_repr(inputs)} are not float32 numbers '
                      f'({str(e).splitlines()[0][:100]}); expected float32 '
                      f'[batch, {input_units}]') from None
  else:
    try:
      dtype = tf.as_dtype(dtype)
    except TypeError:
      dtype = None
    if dtype != tf.float32:
      name = dtype.name if dtype is not None else str(getattr(inputs, 'dtype'))
      raise TfMpError(f'{where}: inputs have dtype {name}; expected float32 '
                      f'[batch, {input_units}] (convert with tf.cast(x, '
                      'tf.float32) if that is what you mean)')
  shape = tf.TensorShape(getattr(inputs, 'shape', None))
  rank_ok = shape.rank is None or (shape.rank >= 2 if any_rank else shape.rank == 2)
  if not rank_ok or (shape.rank is not None and shape[-1] not in (None, input_units)):
    expected = f'[..., {input_units}]' if any_rank else f'[batch, {input_units}]'
    raise TfMpError(f'{where}: inputs have shape {shape.as_list()}; expected '
                    f'{expected}')

