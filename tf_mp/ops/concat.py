"""`fused_concat`: the custom TfMpConcat op when it is built, else `tf.concat`.

The op (`concat_op.cc`, `concat_kernel.cu`) is optional: `python -m
tf_mp.ops.build` builds it into the per-user cache (`tf_mp/ops/cache.py` says
where; one directory per TensorFlow version and sources). Its shared object is
loaded lazily, on first use, from an absolute path in that directory; nothing
is loaded at import. Which path runs:

* `TF_MP_CUSTOM_OPS=0`: always `tf.concat`.
* `TF_MP_CUSTOM_OPS=1`: always the custom op; a missing, stale or unloadable
  library is a `TfMpError`, never a silent fallback.
* `TF_MP_CUSTOM_OPS=auto` (or unset): the custom op when its library is built
  for the running TensorFlow and loads; otherwise one `RuntimeWarning` per
  process, then `tf.concat`.

Either path gives bit-for-bit the same result (a concat only moves bytes), and
the gradient of the custom op is `tf.split` of the incoming gradient.
"""

import ctypes
import os
import threading
import warnings
from typing import Optional, Sequence

import tensorflow as tf

from tf_mp import file_trust
from tf_mp.errors import TfMpError
from tf_mp.ops import cache

ENV_VAR = 'TF_MP_CUSTOM_OPS'
PATHS = ('auto', 'custom', 'tf')
SUPPORTED_DTYPES = (tf.float32, tf.float16, tf.bfloat16, tf.float64)
OP_TYPE = 'TfMpConcat'


class ConcatInputError(TfMpError, tf.errors.InvalidArgumentError):
  """Bad inputs to `fused_concat`: both a `TfMpError` and TensorFlow's
  `InvalidArgumentError`, as the op itself raises for the same inputs."""

  def __init__(self, message: str):
    tf.errors.InvalidArgumentError.__init__(self, None, None, message)

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.message!r})'


def custom_ops_mode() -> str:
  """`TF_MP_CUSTOM_OPS` as '0', '1' or 'auto' (the default when unset)."""
  value = os.environ.get(ENV_VAR, 'auto').strip().lower() or 'auto'
  if value not in ('0', '1', 'auto'):
    raise TfMpError(f'{ENV_VAR}={os.environ[ENV_VAR]!r} is not one of "0" '
                    '(always tf.concat), "1" (always the custom op), "auto"')
  return value


class _LoadFailure(Exception):
  """Why the library cannot be used (one line)."""


class OpLibrary:
  """The TfMpConcat shared object in `ops_dir` (default: the cache), loaded at
  most once.

  The first `load` decides, and the answer (the module or the reason it is not
  usable) is kept for the life of the object. The GPU library is preferred when
  it was built, TensorFlow sees a GPU and the CUDA runtime it links works with
  the installed driver; otherwise the CPU library (with a warning when a GPU is
  there but the CUDA kernel cannot run).
  """

  def __init__(self, ops_dir: Optional[str] = None):
    # None: `cache.library_dir()`, decided at the first `load`.
    self.ops_dir = os.path.abspath(ops_dir) if ops_dir else None
    self._lock = threading.Lock()
    self._module = None
    self._failure: Optional[str] = None
    self._warned = False
    self.path: Optional[str] = None  # the library that was loaded

  def load(self, required: bool):
    """Returns the op module, or None after one warning when not `required`.

    Raises:
      TfMpError: `required` and the library is not usable (the message says
        why and how to build it).
    """
    with self._lock:
      if self._module is None and self._failure is None:
        try:
          self._module = self._load()
        except _LoadFailure as e:
          self._failure = str(e)
      if self._module is not None:
        return self._module
      if required:
        raise TfMpError(f'the custom concat op is not usable: {self._failure}'
                        f'; `{cache.BUILD_COMMAND}` builds it')
      if not self._warned:
        self._warned = True
        warnings.warn(
            f'tf_mp: the custom concat op is not usable ({self._failure}); '
            f'using tf.concat instead. `{cache.BUILD_COMMAND}` builds it; '
            f'{ENV_VAR}=0 silences this warning.', RuntimeWarning,
            stacklevel=4)
      return None

  @property
  def failure(self) -> Optional[str]:
    """Why the library is not usable, once `load` has failed; else None."""
    return self._failure

  def _load(self):
    if self.ops_dir is None:
      try:
        self.ops_dir = cache.library_dir(tf.__version__)
      except cache.SourcesMissingError as e:
        raise _LoadFailure(str(e)) from None
    try:
      info = cache.read_build_info(self.ops_dir)
    except (OSError, ValueError) as e:  # Damaged JSON; a cache root that is a file.
      raise _LoadFailure(f'{self.ops_dir}/{cache.BUILD_INFO} cannot be read '
                         f'({type(e).__name__}: {e})') from None
    if info is not None and not isinstance(info, dict):
      raise _LoadFailure(f'{self.ops_dir}/{cache.BUILD_INFO} is not a build record '
                         f'(a JSON {type(info).__name__}, not an object)')
    if info is None:
      raise _LoadFailure(f'{self.ops_dir}/{cache.BUILD_INFO} not found: the '
                         'op is not built')
    built = (info.get('tf_version'), info.get('tf_git_version'))
    running = (tf.__version__, tf.version.GIT_VERSION)
    if built != running:
      raise _LoadFailure(f'built against TensorFlow {built[0]} ({built[1]}), '
                         f'running {running[0]} ({running[1]})')
    name = info.get('cpu_library') or cache.CPU_LIBRARY
    if info.get('gpu_library') and tf.config.list_physical_devices('GPU'):
      problem = probe_cuda(os.path.join(
          self.ops_dir, info.get('gpu_probe') or cache.GPU_PROBE))
      if problem is None:
        name = info['gpu_library']
      else:
        warnings.warn(
            f'tf_mp: the CUDA kernel of the custom concat op cannot run '
            f'({problem}); using its CPU kernel only (TensorFlow moves '
            'GPU-placed concats to the CPU).', RuntimeWarning, stacklevel=5)
    path = os.path.join(self.ops_dir, name)
    if not os.path.isfile(path):
      raise _LoadFailure(f'{path} not found (renamed or deleted after the '
                         'build)')
    # Loading runs the library's code: only from files only you (or root) can change.
    problem = file_trust.untrusted_reason(path)
    if problem:
      raise _LoadFailure(f'refusing to load native code from {path}: {problem}')
    try:
      module = tf.load_op_library(path)
    except (tf.errors.OpError, OSError, ValueError) as e:
      message = ' '.join(str(e).split())
      raise _LoadFailure(f'loading {path} failed: {message}') from None
    _register_gradient()
    self.path = path
    return module


def probe_cuda(probe_path: str) -> Optional[str]:
  """None when the CUDA kernel's runtime finds a GPU; else why not.

  The probe library is the CUDA kernel alone, without TensorFlow, so loading
  it registers nothing; its CUDA runtime is the one the GPU library links.
  """
  try:
    probe = ctypes.CDLL(probe_path)
  except OSError as e:
    return f'{probe_path} does not load: {e}'
  probe.TfMpConcatGpuErrorString.restype = ctypes.c_char_p
  error = probe.TfMpConcatGpuProbe()
  if error:
    text = probe.TfMpConcatGpuErrorString(error).decode()
    return f'CUDA runtime error {error}: {text}'
  return None


_LIBRARY = OpLibrary()
_GRADIENT_LOCK = threading.Lock()
_gradient_registered = False


def _register_gradient() -> None:
  """Registers TfMpConcat's gradient, once per process."""
  global _gradient_registered
  with _GRADIENT_LOCK:
    if _gradient_registered:
      return
    try:
      tf.RegisterGradient(OP_TYPE)(_concat_grad)
    except KeyError:
      pass  # registered by an earlier import of this module (a reload)
    _gradient_registered = True


def _concat_grad(op, grad):
  """d(output)/d(values[j]) is the j-th slice of `grad` on the last axis."""
  widths = [x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
            for x in op.inputs]
  if len(widths) == 1:
    return [grad]
  return tf.split(grad, widths, axis=-1, num=len(widths))


def _shapes(values) -> str:
  return ', '.join(str(v.shape) for v in values)


def _check(values) -> list:
  """Converts `values` to tensors and checks what is known before running."""
  if isinstance(values, (tf.Tensor, tf.Variable)) or not isinstance(
      values, Sequence):
    raise ConcatInputError(f'values must be a list of tensors, got '
                           f'{type(values).__name__}')
  if not values:
    raise ConcatInputError('values is empty; expected at least one tensor')
  tensors = [tf.convert_to_tensor(v) for v in values]
  dtypes = {t.dtype for t in tensors}
  if len(dtypes) > 1:
    raise ConcatInputError(
        'values have different dtypes (' +
        ', '.join(f'{t.dtype.name}{t.shape}' for t in tensors) +
        '); expected one dtype')
  if tensors[0].dtype not in SUPPORTED_DTYPES:
    raise ConcatInputError(
        f'dtype {tensors[0].dtype.name} is not supported; expected one of ' +
        ', '.join(d.name for d in SUPPORTED_DTYPES))
  ranks = {t.shape.rank for t in tensors} - {None}
  if 0 in ranks:
    raise ConcatInputError(f'a value is a scalar (shapes {_shapes(tensors)}); '
                           'expected every value to have rank >= 1')
  if len(ranks) > 1:
    raise ConcatInputError(f'values have different ranks (shapes '
                           f'{_shapes(tensors)}); expected equal ranks')
  leading = tf.TensorShape(None)
  for t in tensors:
    if t.shape.rank is not None:
      if not leading.is_compatible_with(t.shape[:-1]):
        raise ConcatInputError(
            f'values differ in a dimension other than the last (shapes '
            f'{_shapes(tensors)}); expected equal leading dimensions')
      leading = leading.merge_with(t.shape[:-1])
  return tensors


def _custom(tensors, name):
  module = _LIBRARY.load(required=True)
  return module.tf_mp_concat(tensors, name=name)


def concat_last_axis(values, path: str = 'auto',
                     name: Optional[str] = None) -> tf.Tensor:
  """Joins tensors on their last axis by the chosen path.

  Args:
    values: N >= 1 tensors of one dtype (float32, float16, bfloat16, float64),
      equal rank >= 1 and equal leading dimensions: `[..., w_j]`.
    path: 'tf' (`tf.concat`), 'custom' (the TfMpConcat op; an error when it is
      not usable or `TF_MP_CUSTOM_OPS=0`), or 'auto' (`fused_concat`).
    name: an optional name for the op.

  Returns:
    `[..., sum of w_j]`, on the device of the enclosing `tf.device` scope.

  Raises:
    ConcatInputError: bad `values` (also a `TfMpError` and an
      `InvalidArgumentError`); shapes only known when running are checked by
      the op, which raises `InvalidArgumentError`.
    TfMpError: `path` is not one of 'auto', 'custom', 'tf', or 'custom' cannot
      run.
  """
  if path not in PATHS:
    raise TfMpError(f'concat path {path!r} is not one of "auto", "custom", '
                    '"tf"')
  tensors = _check(values)
  if path == 'tf':
    return tf.concat(tensors, axis=-1, name=name or 'concat')
  mode = custom_ops_mode()
  if path == 'custom':
    if mode == '0':
      raise TfMpError(f'concat path "custom" was asked for but {ENV_VAR}=0 '
                      'disables custom ops; unset it or use path "tf"')
    return _custom(tensors, name)
  if mode == '1':
    return _custom(tensors, name)
  if mode == 'auto' and _LIBRARY.load(required=False) is not None:
    return _custom(tensors, name)
  return tf.concat(tensors, axis=-1, name=name or 'concat')


def fused_concat(values, name: Optional[str] = None) -> tf.Tensor:
  """Joins tensors on their last axis with one fused kernel when it is built.

  The custom TfMpConcat op (one row-wise copy on the CPU, one kernel launch on
  a GPU) when `TF_MP_CUSTOM_OPS` allows it and its library loads; otherwise
  `tf.concat(values, -1)`, after one warning in 'auto' mode (see the module
  docstring). Both give bit-for-bit the same result and gradient.

  Args:
    values: N >= 1 tensors `[..., w_j]` of one float dtype (float32, float16,
      bfloat16, float64), equal rank >= 1 and equal leading dimensions.
    name: an optional name for the op.

  Returns:
    `[..., sum of w_j]`, placed by the enclosing `tf.device` scope.

  Raises:
    ConcatInputError: bad `values`.
    TfMpError: `TF_MP_CUSTOM_OPS=1` and the op is not usable, or the variable
      has another value.
  """
  return concat_last_axis(values, 'auto', name)


def require_custom_concat() -> None:
  """Raises `TfMpError` unless the custom op is allowed and loads."""
  if custom_ops_mode() == '0':
    raise TfMpError(f'the custom concat op was asked for but {ENV_VAR}=0 '
                    'disables custom ops')
  _LIBRARY.load(required=True)


def custom_concat_available() -> bool:
  """Whether `fused_concat` runs the custom op (loads it; never warns)."""
  if custom_ops_mode() == '0':
    return False
  try:
    _LIBRARY.load(required=True)
  except TfMpError:
    return False
  return True


def loaded_library() -> Optional[str]:
  """The path of the loaded TfMpConcat library, or None."""
  return _LIBRARY.path
