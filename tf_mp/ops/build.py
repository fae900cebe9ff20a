"""Builds the TfMpConcat shared objects beside this module (`make ops`).

Two libraries, so that a CUDA problem never costs the CPU kernel:

* `_concat_op.so`: the op, its shape function and the CPU kernel. Always built;
  a failure here is an error.
* `_concat_op_gpu.so`: the same plus the CUDA kernel registered for
  `DEVICE_GPU`. Built when `nvcc` is found: `concat_op.cc` is compiled by the
  host compiler with `-DGOOGLE_CUDA=1` against TensorFlow's headers,
  `concat_kernel.cu` by nvcc against nvcc's own CUDA headers (the wheel's are
  CUDA 12.5, this nvcc may be newer), and nvcc links both with the CUDA runtime
  linked statically, so the library needs no libcudart of its own.

`build_info.json` records what was built and against which TensorFlow; the
loader (`tf_mp/ops/concat.py`) refuses a library built for another version.
Compile flags come from `tf.sysconfig`; no `-std` of our own is added.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional

import tensorflow as tf

from tf_mp.errors import TfMpError

OPS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(os.path.dirname(OPS_DIR))
CPU_LIBRARY = '_concat_op.so'
GPU_LIBRARY = '_concat_op_gpu.so'
# The CUDA kernel alone (no TensorFlow): the loader asks it whether the CUDA
# runtime works with the installed driver before loading GPU_LIBRARY.
GPU_PROBE = '_concat_gpu_probe.so'
BUILD_INFO = 'build_info.json'
SOURCES = ('concat_op.cc', 'concat_kernel.cu', 'concat_kernel.h', 'build.py')

# SASS for A100 (sm_80), H100/H200 (sm_90) and B200 (sm_100), plus compute_90
# PTX that the driver can JIT for newer GPUs.
GENCODES = ('arch=compute_80,code=sm_80', 'arch=compute_90,code=sm_90',
            'arch=compute_100,code=sm_100', 'arch=compute_90,code=compute_90')


class BuildError(TfMpError):
  """A compiler or linker failed; the message ends with its output."""


@dataclasses.dataclass
class BuildResult:
  """What `build` did.

  Attributes:
    cpu_library: absolute path of the CPU library.
    gpu_library: absolute path of the GPU library, or None.
    gpu_reason: why the GPU library is or is not there, in words.
    up_to_date: nothing was compiled: sources, TensorFlow and the compilers
      are what the existing libraries were built from.
    info: the contents of build_info.json.
  """
  cpu_library: str
  gpu_library: Optional[str]
  gpu_reason: str
  up_to_date: bool
  info: dict

  def summary(self) -> str:
    state = 'up to date' if self.up_to_date else 'built'
    lines = [f'TfMpConcat op for TensorFlow {self.info["tf_version"]} '
             f'({state}; {_relative(OPS_DIR)}/{BUILD_INFO}):',
             f'  CPU kernel:  {_relative(self.cpu_library)}']
    if self.gpu_library:
      lines.append(f'  CUDA kernel: {_relative(self.gpu_library)} '
                   f'({self.gpu_reason})')
    else:
      lines.append(f'  CUDA kernel: not built: {self.gpu_reason}')
    return '\n'.join(lines)


def _relative(path: str) -> str:
  try:
    return os.path.relpath(path, REPO_DIR)
  except ValueError:
    return path


def find_nvcc() -> Optional[str]:
  """`$NVCC`, else `nvcc` on PATH, else `$CUDA_HOME/bin/nvcc`; None if none."""
  if os.environ.get('NVCC'):
    return shutil.which(os.environ['NVCC'])
  found = shutil.which('nvcc')
  if found:
    return found
  for home in (os.environ.get('CUDA_HOME'), '/usr/local/cuda'):
    if home and os.access(os.path.join(home, 'bin', 'nvcc'), os.X_OK):
      return os.path.join(home, 'bin', 'nvcc')
  return None


def _version_line(tool: str) -> str:
  try:
    out = subprocess.run([tool, '--version'], capture_output=True, text=True,
                         check=False, timeout=60).stdout
  except OSError as e:
    return f'unusable: {e}'
  lines = [l.strip() for l in out.splitlines() if l.strip()]
  # nvcc ends "Cuda compilation tools, release 13.0, V13.0.88", "Build ...".
  releases = [l for l in lines if 'release' in l]
  return (releases or lines or ['unknown version'])[0]


def _fingerprint(parts: List[str]) -> str:
  digest = hashlib.sha256()
  for name in SOURCES:
    with open(os.path.join(OPS_DIR, name), 'rb') as f:
      digest.update(f.read())
  for part in parts:
    digest.update(part.encode() + b'\0')
  return digest.hexdigest()


def _start(command: List[str]) -> subprocess.Popen:
  return subprocess.Popen(command, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, what: str, verbose: bool) -> None:
  output, _ = process.communicate()
  if verbose and output.strip():
    print(output)
  if process.returncode != 0:
    tail = '\n'.join(output.strip().splitlines()[-40:])
    raise BuildError(f'{what} failed (exit {process.returncode}): '
                     f'{" ".join(process.args)}\n{tail}')


def _install(built: str, target: str) -> None:
  """Moves a library into place by rename, never by rewriting the file.

  A process that has the old library loaded keeps its (unlinked) copy; writing
  into the loaded file instead would crash it.
  """
  staging = target + '.tmp'
  shutil.copyfile(built, staging)
  os.chmod(staging, 0o755)
  os.replace(staging, target)


def read_build_info(ops_dir: str = OPS_DIR) -> Optional[dict]:
  """The recorded build of `ops_dir`, or None when there is none."""
  try:
    with open(os.path.join(ops_dir, BUILD_INFO), encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None


@contextlib.contextmanager
def _exclusive():
  """Serialises builds of this checkout across processes (parallel tests)."""
  name = hashlib.sha256(OPS_DIR.encode()).hexdigest()[:16]
  path = os.path.join(tempfile.gettempdir(), f'tf_mp_ops_{name}.lock')
  with open(path, 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def build(cuda: str = 'auto', force: bool = False,
          verbose: bool = False) -> BuildResult:
  """Builds the libraries into `tf_mp/ops/` unless they are up to date.

  Args:
    cuda: 'auto' (build the CUDA kernel when nvcc is found), 'yes' (nvcc must
      be found), or 'no'.
    force: rebuild even when up to date.
    verbose: print the compilers' output.

  Returns:
    A `BuildResult`; `summary()` says what was built and why not.

  Raises:
    TfMpError: `cuda` is not one of the three values, or 'yes' without nvcc.
    BuildError: a compiler or the linker failed.
  """
  if cuda not in ('auto', 'yes', 'no'):
    raise TfMpError(f'cuda={cuda!r} is not one of "auto", "yes", "no"')
  with _exclusive():
    return _build(cuda, force, verbose)


def _build(cuda: str, force: bool, verbose: bool) -> BuildResult:
  cxx_name = os.environ.get('CXX', 'c++')
  cxx = shutil.which(cxx_name) or cxx_name
  compile_flags = list(tf.sysconfig.get_compile_flags())
  link_flags = list(tf.sysconfig.get_link_flags())
  nvcc = find_nvcc() if cuda != 'no' else None
  if cuda == 'yes' and nvcc is None:
    raise TfMpError('cuda="yes" but nvcc was not found on PATH, in $NVCC or in '
                    '$CUDA_HOME/bin; expected a CUDA toolkit')
  if cuda == 'no':
    gpu_reason = 'CUDA disabled (cuda="no")'
  elif nvcc is None:
    gpu_reason = ('nvcc not found on PATH, in $NVCC or in $CUDA_HOME/bin; the '
                  'CPU kernel works alone')
  else:
    gpu_reason = (f'{_version_line(nvcc)}, '
                  f'{" ".join(g.split("code=")[1] for g in GENCODES)}, '
                  'CUDA runtime linked statically')
  key = _fingerprint([tf.__version__, tf.version.GIT_VERSION, cxx,
                      _version_line(cxx), nvcc or '-', gpu_reason] +
                     compile_flags + link_flags)
  cpu_path = os.path.join(OPS_DIR, CPU_LIBRARY)
  gpu_path = os.path.join(OPS_DIR, GPU_LIBRARY)

  info = read_build_info()
  if (not force and info and info.get('fingerprint') == key and
      os.path.exists(cpu_path) and
      (not info.get('gpu_library') or
       (os.path.exists(gpu_path) and
        os.path.exists(os.path.join(OPS_DIR, GPU_PROBE))))):
    return BuildResult(cpu_path, gpu_path if info['gpu_library'] else None,
                       info['gpu_reason'], True, info)

  # Invalidate first: a half-finished build must not look current.
  if os.path.exists(os.path.join(OPS_DIR, BUILD_INFO)):
    os.remove(os.path.join(OPS_DIR, BUILD_INFO))
  source = os.path.join(OPS_DIR, 'concat_op.cc')
  kernel = os.path.join(OPS_DIR, 'concat_kernel.cu')
  with tempfile.TemporaryDirectory(prefix='tf_mp_ops_') as tmp:
    cpu_tmp = os.path.join(tmp, CPU_LIBRARY)
    jobs = [(_start([cxx, '-shared', '-fPIC', '-O2', *compile_flags, source,
                     '-o', cpu_tmp, *link_flags]), 'CPU kernel build')]
    if nvcc:
      op_object = os.path.join(tmp, 'concat_op_gpu.o')
      kernel_object = os.path.join(tmp, 'concat_kernel.o')
      jobs.append((_start([cxx, '-c', '-fPIC', '-O2', '-DGOOGLE_CUDA=1',
                           *compile_flags, source, '-o', op_object]),
                   'GPU op compile (host compiler, -DGOOGLE_CUDA=1)'))
      gencode_flags = [f'-gencode={g}' for g in GENCODES]
      jobs.append((_start([nvcc, '-c', '-O3', '-Xcompiler', '-fPIC',
                           *gencode_flags, kernel, '-o', kernel_object]),
                   'CUDA kernel compile (nvcc)'))
    failures = {}
    for process, what in jobs:
      try:
        _finish(process, what, verbose)
      except BuildError as e:
        failures[what] = e
    if 'CPU kernel build' in failures:
      raise failures['CPU kernel build']
    _install(cpu_tmp, cpu_path)
    gpu_built = False
    if nvcc:
      if failures:
        raise BuildError(f'{next(iter(failures.values()))}\nThe CPU kernel '
                         'was built; `make ops CUDA=no` builds it alone.')
      gpu_tmp = os.path.join(tmp, GPU_LIBRARY)
      probe_tmp = os.path.join(tmp, GPU_PROBE)
      links = [(_start([nvcc, '-shared', '--cudart=static', op_object,
                        kernel_object, '-o', gpu_tmp, *link_flags]),
                'GPU library link (nvcc)'),
               (_start([nvcc, '-shared', '--cudart=static', kernel_object,
                        '-o', probe_tmp]), 'GPU probe link (nvcc)')]
      for process, what in links:
        _finish(process, what, verbose)
      _install(probe_tmp, os.path.join(OPS_DIR, GPU_PROBE))
      _install(gpu_tmp, gpu_path)
      gpu_built = True
    else:
      for stale in (gpu_path, os.path.join(OPS_DIR, GPU_PROBE)):
        if os.path.exists(stale):
          os.remove(stale)  # built from other sources or another TensorFlow

  info = {
      'fingerprint': key,
      'tf_version': tf.__version__,
      'tf_git_version': tf.version.GIT_VERSION,
      'cpu_library': CPU_LIBRARY,
      'gpu_library': GPU_LIBRARY if gpu_built else None,
      'gpu_probe': GPU_PROBE if gpu_built else None,
      'gpu_reason': gpu_reason,
      'compiler': cxx,
      'compile_flags': compile_flags,
      'link_flags': link_flags,
      'nvcc': nvcc,
      'gencodes': list(GENCODES) if gpu_built else [],
  }
  tmp_info = os.path.join(OPS_DIR, BUILD_INFO + '.tmp')
  with open(tmp_info, 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=2)
  os.replace(tmp_info, os.path.join(OPS_DIR, BUILD_INFO))
  return BuildResult(cpu_path, gpu_path if gpu_built else None, gpu_reason,
                     False, info)
