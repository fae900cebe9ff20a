"""Builds the optional TfMpConcat op for a test module, or skips the module.

`make test` builds the op first (`python -m tf_mp.ops.build --optional`); run
alone, a module builds it here (a no-op when it is up to date). On a machine
without a usable C++ compiler the module's tests skip with the line the build
printed.
"""

import unittest

from tf_mp.ops import build as build_lib


def build_or_skip() -> build_lib.BuildResult:
  """`build_lib.build()`, or `unittest.SkipTest` when no compiler works.

  Raises:
    unittest.SkipTest: no usable toolchain (raised in `setUpModule`, it skips
      every test of the module with this reason).
    BuildError: the op's sources fail to compile (a real failure).
  """
  try:
    return build_lib.build()
  except build_lib.ToolchainError as e:
    raise unittest.SkipTest(f'{build_lib.NOT_BUILT}: {e}') from None
