"""Builds the TfMpConcat shared objects into the per-user cache.

  python -m tf_mp.ops.build               # CUDA kernel too when nvcc works
  python -m tf_mp.ops.build --cuda=no     # the CPU kernel alone
  python -m tf_mp.ops.build --force --verbose
  python -m tf_mp.ops.build --optional    # no compiler: one line, exit 0

The sources come from the package (an installed wheel ships them) and the
libraries go to `tf_mp.ops.cache.library_dir()`, `~/.cache/tf_mp/ops/
<TensorFlow version>-<sources hash>/` by default (see `tf_mp/ops/cache.py`),
never into the package. Two libraries, so that a CUDA problem never costs the
CPU kernel:

* `_concat_op.so`: the op, its shape function and the CPU kernel. Always built;
  a failure here is an error.
* `_concat_op_gpu.so`: the same plus the CUDA kernel registered for
  `DEVICE_GPU`. Built when nvcc is found and works: `concat_op.cc` is compiled
  by the host compiler with `-DGOOGLE_CUDA=1` against TensorFlow's headers,
  `concat_kernel.cu` by nvcc against nvcc's own CUDA headers (the wheel's are
  CUDA 12.5, this nvcc may be newer), and nvcc links both with the CUDA runtime
  linked statically, so the library needs no libcudart of its own.

`build_info.json` records what was built and against which TensorFlow; the
loader (`tf_mp/ops/concat.py`) refuses a library built for another version.
Compile flags come from `tf.sysconfig`; no `-std` of our own is added. Builds
of one directory are serialised by a lock file in it, and each library is
moved into place by rename.

The op is optional, so a missing or broken toolchain (no C++ compiler, or one
that cannot compile a one-line file) is a `ToolchainError`, apart from a
compile error in the op's sources (`BuildError`). With `--optional` (what
`make test` uses) a `ToolchainError` prints one line and exits 0; the op tests
then skip with that line and `fused_concat` uses `tf.concat`. Without it (what
`make ops` uses, and CI should) it exits 1. A compile error always exits 1 with
the compiler's output.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

import tensorflow as tf

from tf_mp.errors import TfMpError
from tf_mp.ops import cache
from tf_mp.ops.cache import (BUILD_INFO, CPU_LIBRARY, GPU_LIBRARY, GPU_PROBE,
                             OPS_DIR, read_build_info)
from tf_mp.ops.gencodes import GENCODES

NOT_BUILT = 'TfMpConcat op not built'


class BuildError(TfMpError):
  """A compiler or linker failed on the op; the message ends with its output."""


class ToolchainError(TfMpError):
  """No usable compiler: the op cannot be built on this machine at all."""


@dataclasses.dataclass
class BuildResult:
  """What `build` did.

  Attributes:
    directory: absolute path of the cache directory holding the libraries.
    cpu_library: absolute path of the CPU library.
    gpu_library: absolute path of the GPU library, or None.
    gpu_reason: why the GPU library is or is not there, in words.
    up_to_date: nothing was compiled: sources, TensorFlow and the compilers
      are what the existing libraries were built from.
    info: the contents of build_info.json.
  """
  directory: str
  cpu_library: str
  gpu_library: Optional[str]
  gpu_reason: str
  up_to_date: bool
  info: dict

  def summary(self) -> str:
    state = 'up to date' if self.up_to_date else 'built'
    lines = [f'TfMpConcat op for TensorFlow {self.info["tf_version"]} '
             f'({state}) in {self.directory}:',
             f'  CPU kernel:  {os.path.basename(self.cpu_library)}']
    if self.gpu_library:
      lines.append(f'  CUDA kernel: {os.path.basename(self.gpu_library)} '
                   f'({self.gpu_reason})')
    else:
      lines.append(f'  CUDA kernel: not built: {self.gpu_reason}')
    return '\n'.join(lines)


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


def _run(command: List[str]) -> subprocess.CompletedProcess:
  return subprocess.run(command, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, check=False,
                        timeout=300)


def _first_line(output: str) -> str:
  lines = [l.strip() for l in output.splitlines() if l.strip()]
  return f': {lines[0][:200]}' if lines else ''


def find_cxx() -> str:
  """The C++ compiler (`$CXX`, else `c++` on PATH), checked on a tiny file.

  Raises:
    ToolchainError: there is none, or it cannot build a one-line shared object
      (so a failure is the machine's, not the op's).
  """
  name = os.environ.get('CXX', 'c++')
  path = shutil.which(name)
  if path is None:
    origin = '$CXX' if 'CXX' in os.environ else 'the default, c++'
    raise ToolchainError(f'no C++ compiler: {name!r} ({origin}) is not on '
                         'PATH; install g++ or set CXX')
  with tempfile.TemporaryDirectory(prefix='tf_mp_cxx_check_') as tmp:
    source = os.path.join(tmp, 'check.cc')
    with open(source, 'w', encoding='utf-8') as f:
      f.write('int tf_mp_compiler_check() { return 0; }\n')
    command = [path, '-shared', '-fPIC', source, '-o',
               os.path.join(tmp, 'check.so')]
    try:
      proc = _run(command)
    except (OSError, subprocess.SubprocessError) as e:
      raise ToolchainError(f'the C++ compiler {path} does not run: '
                           f'{e}') from None
  if proc.returncode != 0:
    raise ToolchainError(
        f'the C++ compiler {path} does not work: it fails (exit '
        f'{proc.returncode}) on a one-line test file{_first_line(proc.stdout)}')
  return path


def _nvcc_problem(nvcc: str) -> Optional[str]:
  """None when `nvcc --version` succeeds, else why not (one line)."""
  try:
    proc = _run([nvcc, '--version'])
  except (OSError, subprocess.SubprocessError) as e:
    return f'{nvcc} does not run: {e}'
  if proc.returncode != 0:
    return (f'{nvcc} does not work: `nvcc --version` exits '
            f'{proc.returncode}{_first_line(proc.stdout)}')
  return None


def _version_line(tool: str) -> str:
  try:
    out = _run([tool, '--version']).stdout
  except (OSError, subprocess.SubprocessError) as e:
    return f'unusable: {e}'
  lines = [l.strip() for l in out.splitlines() if l.strip()]
  # nvcc ends "Cuda compilation tools, release 13.0, V13.0.88", "Build ...".
  releases = [l for l in lines if 'release' in l]
  return (releases or lines or ['unknown version'])[0]


def _fingerprint(parts: List[str]) -> str:
  digest = hashlib.sha256(cache.sources_hash().encode() + b'\0')
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


@contextlib.contextmanager
def _exclusive(directory: str):
  """Serialises builds of one cache directory across processes."""
  with open(os.path.join(directory, '.lock'), 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def library_dir() -> str:
  """The cache directory for the running TensorFlow and the package sources.

  Raises:
    TfMpError: the package lacks an op source.
  """
  try:
    return cache.library_dir(tf.__version__)
  except cache.SourcesMissingError as e:
    raise TfMpError(str(e)) from None


def build(cuda: str = 'auto', force: bool = False,
          verbose: bool = False) -> BuildResult:
  """Builds the libraries into the cache unless they are up to date there.

  Args:
    cuda: 'auto' (build the CUDA kernel when nvcc is found and runs), 'yes'
      (nvcc must work), or 'no'.
    force: rebuild even when up to date.
    verbose: print the compilers' output.

  Returns:
    A `BuildResult`; `summary()` says what was built, where, and why not.

  Raises:
    ToolchainError: no usable C++ compiler, or `cuda='yes'` without a working
      nvcc; nothing was changed.
    BuildError: a compiler or the linker failed on the op's sources.
    TfMpError: `cuda` is not one of the three values, the package lacks an op
      source, or the cache directory cannot be created.
  """
  if cuda not in ('auto', 'yes', 'no'):
    raise TfMpError(f'cuda={cuda!r} is not one of "auto", "yes", "no"')
  directory = library_dir()
  # Before touching the cache: a machine without compilers keeps its build.
  cxx = find_cxx()
  nvcc = find_nvcc() if cuda != 'no' else None
  problem = _nvcc_problem(nvcc) if nvcc else None
  if cuda == 'yes' and (nvcc is None or problem):
    raise ToolchainError(
        'cuda="yes" but ' + (problem or 'nvcc was not found on PATH, in $NVCC '
                             'or in $CUDA_HOME/bin; expected a CUDA toolkit'))
  if cuda == 'no':
    gpu_reason = 'CUDA disabled (cuda="no")'
  elif nvcc is None:
    gpu_reason = ('nvcc not found on PATH, in $NVCC or in $CUDA_HOME/bin; the '
                  'CPU kernel works alone')
  elif problem:
    gpu_reason = f'{problem}; the CPU kernel works alone'
    nvcc = None
  else:
    gpu_reason = (f'{_version_line(nvcc)}, '
                  f'{" ".join(g.split("code=")[1] for g in GENCODES)}, '
                  'CUDA runtime linked statically')
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise TfMpError(f'cannot create the op cache {directory}: {e}; set '
                    f'{cache.CACHE_ENV_VAR} to a writable directory') from None
  with _exclusive(directory):
    return _build(directory, cxx, nvcc, gpu_reason, force, verbose)


def _build(directory: str, cxx: str, nvcc: Optional[str], gpu_reason: str,
           force: bool, verbose: bool) -> BuildResult:
  compile_flags = list(tf.sysconfig.get_compile_flags())
  link_flags = list(tf.sysconfig.get_link_flags())
  # Where TensorFlow is installed is left out: two environments with the same
  # TensorFlow share one build (the libraries name libtensorflow_framework by
  # soname only) instead of rebuilding it in turn.
  installed_at = tf.sysconfig.get_lib()
  key = _fingerprint([tf.__version__, tf.version.GIT_VERSION, cxx,
                      _version_line(cxx), nvcc or '-', gpu_reason] +
                     [f.replace(installed_at, '<tensorflow>')
                      for f in compile_flags + link_flags])
  cpu_path = os.path.join(directory, CPU_LIBRARY)
  gpu_path = os.path.join(directory, GPU_LIBRARY)
  probe_path = os.path.join(directory, GPU_PROBE)
  info_path = os.path.join(directory, BUILD_INFO)

  info = read_build_info(directory)
  if (not force and info and info.get('fingerprint') == key and
      os.path.exists(cpu_path) and
      (not info.get('gpu_library') or
       (os.path.exists(gpu_path) and os.path.exists(probe_path)))):
    return BuildResult(directory, cpu_path,
                       gpu_path if info['gpu_library'] else None,
                       info['gpu_reason'], True, info)

  # Invalidate first: a half-finished build must not look current.
  if os.path.exists(info_path):
    os.remove(info_path)
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
                         f'was built; `{cache.BUILD_COMMAND} --cuda=no` '
                         'builds it alone.')
      gpu_tmp = os.path.join(tmp, GPU_LIBRARY)
      probe_tmp = os.path.join(tmp, GPU_PROBE)
      links = [(_start([nvcc, '-shared', '--cudart=static', op_object,
                        kernel_object, '-o', gpu_tmp, *link_flags]),
                'GPU library link (nvcc)'),
               (_start([nvcc, '-shared', '--cudart=static', kernel_object,
                        '-o', probe_tmp]), 'GPU probe link (nvcc)')]
      for process, what in links:
        _finish(process, what, verbose)
      _install(probe_tmp, probe_path)
      _install(gpu_tmp, gpu_path)
      gpu_built = True
    else:
      for stale in (gpu_path, probe_path):
        if os.path.exists(stale):
          os.remove(stale)  # built by another compiler or with CUDA

  info = {
      'fingerprint': key,
      'tf_version': tf.__version__,
      'tf_git_version': tf.version.GIT_VERSION,
      'cpu_library': CPU_LIBRARY,
      'gpu_library': GPU_LIBRARY if gpu_built else None,
      'gpu_probe': GPU_PROBE if gpu_built else None,
      'gpu_reason': gpu_reason,
      'sources': OPS_DIR,
      'compiler': cxx,
      'compile_flags': compile_flags,
      'link_flags': link_flags,
      'nvcc': nvcc,
      'gencodes': list(GENCODES) if gpu_built else [],
  }
  tmp_info = info_path + '.tmp'
  with open(tmp_info, 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=2)
  os.replace(tmp_info, info_path)
  return BuildResult(directory, cpu_path, gpu_path if gpu_built else None,
                     gpu_reason, False, info)


def main(argv: Optional[List[str]] = None) -> int:
  """`python -m tf_mp.ops.build`: builds, prints what and where; exit status.

  Returns:
    0 built or up to date (or, with --optional, not buildable here: one line
    says why); 1 a compile error, no usable compiler without --optional, or
    another `TfMpError` (one line, no traceback); argparse exits 2 on bad flags.
  """
  parser = argparse.ArgumentParser(
      prog=cache.BUILD_COMMAND,
      description=('Builds the optional TfMpConcat op (CPU kernel; CUDA kernel '
                   'when nvcc works) into the per-user cache '
                   f'({cache.cache_root()}/ops/...). Does nothing when the '
                   'sources, TensorFlow and the compilers are unchanged.'))
  parser.add_argument('--cuda', choices=('auto', 'yes', 'no'), default='auto',
                      help='build the CUDA kernel: auto (when nvcc is found '
                      'and runs), yes (nvcc must work), no (default: auto)')
  parser.add_argument('--force', action='store_true',
                      help='rebuild even when up to date')
  parser.add_argument('--verbose', action='store_true',
                      help="print the compilers' output")
  parser.add_argument('--optional', action='store_true',
                      help='no usable compiler is not an error: print one line '
                      'saying so and exit 0 (compile errors still exit 1)')
  args = parser.parse_args(argv)
  try:
    result = build(args.cuda, force=args.force, verbose=args.verbose)
  except ToolchainError as e:
    if args.optional:
      print(f'{NOT_BUILT}: {e}; its tests are skipped and fused_concat uses '
            'tf.concat')
      return 0
    print(f'{parser.prog}: {NOT_BUILT}: {e}', file=sys.stderr)
    return 1
  except TfMpError as e:
    print(f'{parser.prog}: error: {e}', file=sys.stderr)
    return 1
  print(result.summary())
  return 0


if __name__ == '__main__':
  sys.exit(main())
