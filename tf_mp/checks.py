"""Argument checks shared by the library: one wording for each kind of mistake."""

import numbers

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


def integer(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TfMpError(f'{name} must be an integer, got {value!r}')
  return int(value)
