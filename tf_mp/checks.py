"""Argument checks shared by the public functions: one TfMpError line each."""

import numbers

from tf_mp.errors import TfMpError


def positive_int(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer >= 1 (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise TfMpError(f'{name} must be a positive integer, got {value!r}')
  return int(value)


def non_negative_int(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer >= 0 (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise TfMpError(f'{name} must be an integer >= 0, got {value!r}')
  return int(value)


def integer(name: str, value) -> int:
  """Returns `value` as an int; TfMpError unless it is an integer (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TfMpError(f'{name} must be an integer, got {value!r}')
  return int(value)
