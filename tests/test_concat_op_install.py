"""The op without a clone or a compiler: what the package ships, and skipping.

* A wheel, built from the source tree and from the sdist, ships the op's
  C++/CUDA sources and never a built library.
* With failing `g++`, `c++` and `nvcc` stand-ins first on PATH, the build
  says in one line why the op is not built (exit 0 with `--optional`, as in
  `make test`; exit 1 without, as in `make ops`), writes nothing, and the op
  tests skip with that line. No real compile happens in this module.
"""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from unittest import mock

import tensorflow as tf

from tf_mp.ops import build as build_lib
from tf_mp.ops import cache
from tf_mp.version import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGED_OPS = [f'tf_mp/ops/{name}' for name in cache.SOURCES + ('cache.py',)]
NOT_BUILT_LINE = (r'TfMpConcat op not built: the C\+\+ compiler \S+/c\+\+ does '
                  r'not work: it fails \(exit 1\) on a one-line test file: '
                  r'stand-in c\+\+ is broken')


def make_stand_ins(directory):
  """`g++`, `c++` and `nvcc` that say they are broken and exit 1."""
  for tool in ('g++', 'c++', 'nvcc'):
    path = os.path.join(directory, tool)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(f'#!/bin/sh\necho "stand-in {tool} is broken" >&2\nexit 1\n')
    os.chmod(path, 0o755)


def without_compilers(tmp):
  """An environment whose PATH starts with failing stand-ins, cache in tmp."""
  bin_dir = os.path.join(tmp, 'bin')
  os.makedirs(bin_dir)
  make_stand_ins(bin_dir)
  env = {k: v for k, v in os.environ.items() if k not in ('CXX', 'NVCC')}
  env.update(PATH=bin_dir + os.pathsep + os.environ['PATH'],
             TF_MP_CACHE_DIR=os.path.join(tmp, 'cache'),
             TF_CPP_MIN_LOG_LEVEL='3',
             PYTHONPATH=os.pathsep.join(
                 [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  return env


class WithoutCompilersTest(tf.test.TestCase):

  def make_tempdir(self):
    path = tempfile.mkdtemp(prefix='tf_mp_no_compiler_')
    self.addCleanup(shutil.rmtree, path)
    return path

  def test_build_says_why_in_one_line_and_the_op_tests_skip(self):
    tmp = self.make_tempdir()
    env = without_compilers(tmp)

    def start(*args):
      return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT)

    # Concurrently: most of each run is importing TensorFlow.
    procs = {
        'optional': start('-m', 'tf_mp.ops.build', '--optional'),
        'pytest': start('-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
                        'tests/test_concat_op.py',
                        'tests/test_concat_op_build.py'),
    }
    out = {}
    for name, proc in procs.items():
      try:
        out[name] = proc.communicate(timeout=300)
      finally:
        proc.kill()
      out[name] += (proc.returncode,)

    stdout, stderr, returncode = out['optional']
    self.assertEqual(returncode, 0, stderr[-3000:])
    self.assertRegex(stdout, f'^{NOT_BUILT_LINE}; its tests are skipped and '
                     r'fused_concat uses tf\.concat\n$')

    # Without --optional (`make ops`): the same line on stderr, exit 1.
    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env, clear=True), \
         contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      returncode = build_lib.main([])
    self.assertEqual(returncode, 1)
    self.assertEqual(stdout.getvalue(), '')
    self.assertRegex(stderr.getvalue(),
                     rf'^python -m tf_mp\.ops\.build: {NOT_BUILT_LINE}\n$')

    stdout, stderr, returncode = out['pytest']
    self.assertEqual(returncode, 0, stdout[-3000:] + stderr[-3000:])
    # Every test of both modules, skipped for that one reason (pytest groups
    # equal reasons into one line).
    reasons = [l for l in stdout.splitlines() if l.startswith('SKIPPED')]
    self.assertLen(reasons, 1, stdout)
    self.assertRegex(reasons[0], rf'^SKIPPED \[(\d+)\] .*: {NOT_BUILT_LINE}$')
    count = reasons[0].split('[')[1].split(']')[0]
    self.assertRegex(stdout.strip().splitlines()[-1], rf'^{count} skipped in ')

    # Nothing was written: the cache was not even created.
    self.assertFalse(os.path.exists(os.path.join(tmp, 'cache')))

  def test_no_compiler_on_path(self):
    empty = self.make_tempdir()
    env = {k: v for k, v in os.environ.items() if k != 'CXX'}
    env['PATH'] = empty
    with mock.patch.dict(os.environ, env, clear=True):
      with self.assertRaisesRegex(
          build_lib.ToolchainError,
          r"^no C\+\+ compiler: 'c\+\+' \(the default, c\+\+\) is not on "
          r'PATH; install g\+\+ or set CXX$'):
        build_lib.find_cxx()
      os.environ['CXX'] = 'no-such-cxx'
      with self.assertRaisesRegex(
          build_lib.ToolchainError,
          r"^no C\+\+ compiler: 'no-such-cxx' \(\$CXX\) is not on PATH"):
        build_lib.build()

  def test_failing_nvcc_leaves_the_cpu_kernel(self):
    try:
      build_lib.find_cxx()
    except build_lib.ToolchainError as e:
      self.skipTest(f'no working C++ compiler here: {e}')
    tmp = self.make_tempdir()
    make_stand_ins(tmp)
    nvcc = os.path.join(tmp, 'nvcc')
    with mock.patch.dict(os.environ, {'NVCC': nvcc,
                                      'TF_MP_CACHE_DIR': tmp + '/cache'}):
      self.assertEqual(
          build_lib._nvcc_problem(nvcc),
          f'{nvcc} does not work: `nvcc --version` exits 1: stand-in nvcc is '
          'broken')
      with self.assertRaisesRegex(build_lib.ToolchainError,
                                  r'^cuda="yes" but \S+/nvcc does not work'):
        build_lib.build(cuda='yes')
      # 'auto' goes on to compile the CPU kernel alone; stop it there.
      with mock.patch.object(build_lib, '_build') as compile_all:
        build_lib.build(cuda='auto')
    _, _, nvcc_used, gpu_reason, _, _ = compile_all.call_args.args
    self.assertIsNone(nvcc_used)
    self.assertRegex(gpu_reason, r'nvcc does not work: .*; the CPU kernel '
                     'works alone$')


def copy_source_tree(target):
  """What `pip install <clone>` reads, with stale in-tree build outputs."""
  for name in ('setup.py', 'MANIFEST.in', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), target)
  shutil.copytree(os.path.join(ROOT, 'tf_mp'), os.path.join(target, 'tf_mp'),
                  ignore=shutil.ignore_patterns('__pycache__'))
  # As an older `make ops` left them: they must not be shipped.
  for name in (cache.CPU_LIBRARY, cache.BUILD_INFO):
    with open(os.path.join(target, 'tf_mp', 'ops', name), 'w') as f:
      f.write('stale')


class PackageTest(tf.test.TestCase):

  def pip_wheel(self, source, out):
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps',
         '--no-build-isolation', '--no-index', '-w', out, source],
        capture_output=True, text=True, timeout=300, cwd=out)
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
    wheels = [n for n in os.listdir(out) if n.endswith('.whl')]
    self.assertLen(wheels, 1)
    with zipfile.ZipFile(os.path.join(out, wheels[0])) as wheel:
      return wheels[0], wheel.namelist()

  def assert_ships_sources_only(self, names):
    for path in PACKAGED_OPS + ['tf_mp/version.py', 'tf_mp/__init__.py']:
      self.assertIn(path, names)
    self.assertEmpty([n for n in names if n.endswith('.so') or
                      n.endswith(cache.BUILD_INFO)])

  def test_wheel_and_sdist_ship_the_op_sources_and_no_library(self):
    tmp = tempfile.mkdtemp(prefix='tf_mp_package_')
    self.addCleanup(shutil.rmtree, tmp)
    source = os.path.join(tmp, 'src')
    os.makedirs(source)
    copy_source_tree(source)

    wheel_dir = os.path.join(tmp, 'wheel')
    os.makedirs(wheel_dir)
    name, names = self.pip_wheel(source, wheel_dir)
    self.assertEqual(name, f'tf_mp-{__version__}-py3-none-any.whl')
    self.assert_ships_sources_only(names)

    sdist_dir = os.path.join(tmp, 'sdist')
    proc = subprocess.run(
        [sys.executable, 'setup.py', '-q', 'sdist', '-d', sdist_dir],
        capture_output=True, text=True, timeout=300, cwd=source)
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
    sdist = os.path.join(sdist_dir, f'tf_mp-{__version__}.tar.gz')
    with tarfile.open(sdist) as tar:
      members = [n.split('/', 1)[1] for n in tar.getnames() if '/' in n]
    self.assert_ships_sources_only(members)
    self.assertIn('MANIFEST.in', members)

    # pip installs an sdist by building a wheel from it.
    from_sdist = os.path.join(tmp, 'from_sdist')
    os.makedirs(from_sdist)
    _, names = self.pip_wheel(sdist, from_sdist)
    self.assert_ships_sources_only(names)


if __name__ == '__main__':
  tf.test.main()
