"""Where the TfMpConcat libraries live: one per-user cache directory.

The one rule, for an installed package and a source checkout alike: the
libraries are built by `python -m tf_mp.ops.build` into

  <cache root>/ops/<TensorFlow version>-<hash of the op's build inputs>/

and loaded from there, never from (or into) the package directory, so
site-packages is never written. The cache root is `$TF_MP_CACHE_DIR` when set,
else `$XDG_CACHE_HOME/tf_mp`, else `~/.cache/tf_mp`. The hash covers the C++
and CUDA sources and the build script (`SOURCES`), read from the package, so
an edited source, another build script or another TensorFlow gets a directory
of its own, and a checkout and an install of the same sources share a build
(also across virtual environments with the same TensorFlow). Directories of
older sources are left behind; deleting the cache root loses nothing that
`python -m tf_mp.ops.build` cannot remake.

No TensorFlow here: callers pass its version.
"""

import hashlib
import json
import os
from typing import Optional

OPS_DIR = os.path.dirname(os.path.abspath(__file__))
CACHE_ENV_VAR = 'TF_MP_CACHE_DIR'
BUILD_COMMAND = 'python -m tf_mp.ops.build'

CPU_LIBRARY = '_concat_op.so'
GPU_LIBRARY = '_concat_op_gpu.so'
# The CUDA kernel alone (no TensorFlow): the loader asks it whether the CUDA
# runtime works with the installed driver before loading GPU_LIBRARY.
GPU_PROBE = '_concat_gpu_probe.so'
BUILD_INFO = 'build_info.json'
# Shipped as package data (setup.py, MANIFEST.in): what the compilers read.
NATIVE_SOURCES = ('concat_op.cc', 'concat_kernel.cu', 'concat_kernel.h')
# Everything a build depends on in the package; its hash names the directory.
SOURCES = NATIVE_SOURCES + ('build.py', 'gencodes.py')


class SourcesMissingError(Exception):
  """The package lacks an op source (an install without its package data)."""


def cache_root() -> str:
  """`$TF_MP_CACHE_DIR`, else `$XDG_CACHE_HOME/tf_mp`, else `~/.cache/tf_mp`."""
  if os.environ.get(CACHE_ENV_VAR):
    return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV_VAR]))
  xdg = os.environ.get('XDG_CACHE_HOME', '')
  if not os.path.isabs(xdg):  # the XDG spec: a relative path is ignored
    xdg = os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(xdg, 'tf_mp')


def sources_hash() -> str:
  """The sha256 (hex) of `SOURCES` as they are in the package.

  Raises:
    SourcesMissingError: a source file is not in the package.
  """
  digest = hashlib.sha256()
  for name in SOURCES:
    try:
      with open(os.path.join(OPS_DIR, name), 'rb') as f:
        content = f.read()
    except FileNotFoundError:
      raise SourcesMissingError(
          f'{os.path.join(OPS_DIR, name)} is missing: this tf_mp was '
          'installed without the op sources; reinstall it from a wheel or a '
          'source checkout') from None
    digest.update(name.encode() + b'\0' + content + b'\0')
  return digest.hexdigest()


def library_dir(tf_version: str) -> str:
  """The directory of the libraries for this TensorFlow and these sources.

  Args:
    tf_version: `tf.__version__` of the TensorFlow the op is for.

  Raises:
    SourcesMissingError: a source file is not in the package.
  """
  return os.path.join(cache_root(), 'ops',
                      f'{tf_version}-{sources_hash()[:16]}')


def read_build_info(directory: str) -> Optional[dict]:
  """The recorded build in `directory`, or None when there is none."""
  try:
    with open(os.path.join(directory, BUILD_INFO), encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
