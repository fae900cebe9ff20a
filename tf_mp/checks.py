"""Argument checks shared by the library: one wording for each kind of mistake."""

import numbers
from typing import Optional

import numpy as np

from tf_mp.errors import TfMpError


def positive_int(name: str, value, minimum: int = 1) -> int:
  """Returns `value` as an int if it is an integer >= `minimum` (not a bool).

  Raises:
    TfMpError: naming `name`, the value and what was expected.
  """
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
      value < minimum):
    expected = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
    raise TfMpError(f'{name} must be {expected}, got {value!r}')
  return int(value)


def non_negative_int(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer >= 0 (not a bool)."""
  return positive_int(name, value, minimum=0)


def divisible_batch(batch_size: int, replicas: int) -> None:
  """TfMpError unless the global `batch_size` splits evenly over `replicas`."""
  if batch_size % replicas:
    raise TfMpError(f'batch_size {batch_size} is not divisible by the '
                    f'{replicas} replicas in sync; expected a multiple '
                    f'of {replicas} (batch_size is the global batch)')


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def integer(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer (not a bool) in int64's range.

  (Seeds are the use: TensorFlow takes them as int64.)
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TfMpError(f'{name} must be an integer, got {value!r}')
  if not INT64_MIN <= value <= INT64_MAX:
    raise TfMpError(f'{name} must be an integer in int64\'s range '
                    f'[-2**63, 2**63 - 1], got {value!r}')
  return int(value)


def module_name(name: str, value):
  """Returns `value`; TfMpError unless it is None or a name `tf.Module` takes (an identifier)."""
  if value is not None and not (isinstance(value, str) and value.isidentifier()):
    raise TfMpError(f'{name} must be a Python identifier such as "head" (or None), '
                    f'got {short_repr(value)}')
  return value


def finite_number(name: str, value, minimum: Optional[float] = None, *,
                  positive: bool = False) -> float:
  """Returns `value` as a float if it is a finite real number (not a bool).

  Args:
    name: how the message names the value, e.g. 'learning_rate'.
    value: the value to check.
    minimum: the smallest value allowed (inclusive), if any.
    positive: also refuse 0 and below.

  Raises:
    TfMpError: naming `name`, the value and what was expected.
  """
  ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and
        np.isfinite(float(value)))
  if ok and positive:
    ok = value > 0
  if ok and minimum is not None:
    ok = value >= minimum
  if not ok:
    expected = ('a finite number > 0' if positive else
                f'a finite number >= {minimum:g}' if minimum is not None else
                'a finite number')
    raise TfMpError(f'{name} must be {expected}, got {value!r}')
  return float(value)


def boolean(name: str, value) -> bool:
  """Returns `value`; TfMpError unless it is a bool (or numpy bool)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TfMpError(f'{name} must be True or False, got {value!r}')
  return bool(value)


def optional_callable(name: str, value):
  """Returns `value`; TfMpError unless it is None or callable."""
  if value is not None and not callable(value):
    raise TfMpError(f'{name} must be a function (or None), got {short_repr(value)}')
  return value


def instance_of(name: str, value, types, expected: str):
  """Returns `value`; TfMpError unless it is an instance of `types`.

  Args:
    name: how the message names the value, e.g. 'trainer'.
    value: the value to check.
    types: a type or a tuple of types, as for `isinstance`.
    expected: what the message says was expected, e.g. 'a tf_mp.Trainer'.
  """
  if not isinstance(value, types):
    raise TfMpError(f'{name} must be {expected}, got {short_repr(value)}')
  return value


def has_attributes(name: str, value, attributes, expected: str):
  """Returns `value`; TfMpError unless it has every one of `attributes` (duck typing)."""
  missing = [a for a in attributes if not hasattr(value, a)]
  if missing:
    raise TfMpError(f'{name} must be {expected}, got {short_repr(value)} (it has no '
                    f'{", ".join(missing)})')
  return value


def text(name: str, value, expected: str = 'a string') -> str:
  """Returns `value`; TfMpError unless it is a `str`."""
  if not isinstance(value, str):
    raise TfMpError(f'{name} must be {expected}, got {short_repr(value)}')
  return value


def numeric_array(name: str, value, *, integer_values: bool = False) -> np.ndarray:
  """`np.asarray(value)` if it is a rectangular array of numbers, else TfMpError.

  Args:
    name: how the message names the value, e.g. "'x'".
    value: an array, a tensor or a nested list of numbers.
    integer_values: require an integer dtype (token ids, labels).
  """
  try:
    array = np.asarray(value)
  except (ValueError, TypeError):
    array = None
  kind = 'iu' if integer_values else 'iuf'
  if array is None or array.dtype.kind not in kind or array.ndim == 0:
    expected = ('an integer array' if integer_values else 'an array of numbers')
    shown = (f'dtype {array.dtype}' if array is not None and array.ndim
             else short_repr(value))
    raise TfMpError(f'{name} must be {expected}, got {shown}')
  return array


def non_finite_variable(variables) -> Optional[str]:
  """The name of the first floating-point variable that holds NaN or Inf, or None."""
  for var in variables:
    if var.dtype.is_floating and not np.isfinite(var.numpy()).all():
      return var.name
  return None


def short_repr(value) -> str:
  """`repr(value)`, cut to 60 characters (a message stays one short line)."""
  shown = repr(value)
  shown = shown if len(shown) <= 60 else shown[:57] + '...'
  return ' '.join(shown.split())


def module(name: str, value):
  """Returns `value`; TfMpError unless it has variables, as a `tf.Module` has."""
  return has_attributes(name, value, ('variables', 'trainable_variables'),
                        'a tf.Module, e.g. tf_mp.build_model(...)')


def trainer_of(value, model=None, name: str = 'trainer'):
  """Returns `value`; TfMpError unless it is a trainer (of `model`, when given).

  A trainer is what `tf_mp.Trainer` makes: `model`, `optimizer` and `step`.
  """
  has_attributes(name, value, ('model', 'optimizer', 'step'), 'a tf_mp.Trainer')
  if model is not None and value.model is not model:
    raise TfMpError(f'{name} trains a different model than the one given; '
                    'expected Trainer(model) for this model')
  return value
