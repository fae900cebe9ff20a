"""Lazy sub-module access for the packages' `__getattr__` (no TensorFlow import here)."""

import importlib


def import_submodule(package: str, name: str):
  """`package.name` imported; AttributeError when there is no such module.

  A `ModuleNotFoundError` from inside that module (a missing dependency) is
  raised as is, not hidden behind an AttributeError.
  """
  try:
    return importlib.import_module(f'{package}.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'{package}.{name}':
      raise
    raise AttributeError(f'module {package} has no attribute {name!r}') from None
