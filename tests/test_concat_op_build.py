"""The TfMpConcat build: what it records and where, GPU library, GPU check.

Without a GPU (as on the development machine) the CUDA part is compiled and
linked and the GPU library is loaded and run on the CPU; with a GPU visible to
TensorFlow the CUDA kernel also runs through TensorFlow.
"""

import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import kernels

import op_testing
from tf_mp.ops import build as build_lib
from tf_mp.ops import cache
from tf_mp.ops import concat as concat_lib
import testing
from testing import draw_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_GPU = bool(tf.config.list_physical_devices('GPU'))
LIBRARY_DIR = None  # where the build put the libraries


def setUpModule():
  global LIBRARY_DIR
  LIBRARY_DIR = op_testing.build_or_skip().directory


def run_python(code, timeout=120):
  return testing.run_python(['-c', code], timeout=timeout,
                            env={'TF_MP_CUSTOM_OPS': '1'})


class BuildInfoTest(tf.test.TestCase):

  def test_records_tensorflow_version_and_loads_from_the_cache(self):
    self.assertEqual(LIBRARY_DIR, build_lib.library_dir())
    self.assertTrue(LIBRARY_DIR.startswith(cache.cache_root() + os.sep))
    self.assertFalse(LIBRARY_DIR.startswith(cache.OPS_DIR))
    self.assertEqual(os.path.basename(LIBRARY_DIR),
                     f'{tf.__version__}-{cache.sources_hash()[:16]}')
    info = cache.read_build_info(LIBRARY_DIR)
    self.assertEqual(info['tf_version'], tf.__version__)
    self.assertEqual(info['tf_git_version'], tf.version.GIT_VERSION)
    self.assertNotIn('-std=c++11', ' '.join(info['compile_flags']))
    with mock.patch.dict(os.environ, {concat_lib.ENV_VAR: 'auto'}):
      self.assertTrue(concat_lib.custom_concat_available())
    path = concat_lib.loaded_library()
    self.assertTrue(os.path.isabs(path))
    self.assertEqual(os.path.dirname(path), LIBRARY_DIR)
    devices = {k.device_type for k in
               kernels.get_registered_kernels_for_op('TfMpConcat').kernel}
    self.assertIn('CPU', devices)

  def test_a_second_build_is_up_to_date(self):
    self.assertTrue(build_lib.build().up_to_date)

  def test_bad_cuda_choice(self):
    with self.assertRaisesRegex(build_lib.TfMpError, "cuda='maybe'"):
      build_lib.build(cuda='maybe')


class GpuBuildTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    info = cache.read_build_info(LIBRARY_DIR)
    if not info['gpu_library']:
      self.skipTest(f'CUDA kernel not built: {info["gpu_reason"]}')

  def test_gpu_library_registers_a_gpu_kernel_and_runs_on_cpu(self):
    info = cache.read_build_info(LIBRARY_DIR)
    self.assertEqual(info['gpu_library'], cache.GPU_LIBRARY)
    self.assertIn('arch=compute_90,code=sm_90', info['gencodes'])
    self.assertIn('arch=compute_80,code=sm_80', info['gencodes'])
    path = os.path.join(LIBRARY_DIR, cache.GPU_LIBRARY)
    # A separate process: TensorFlow cannot load a second library that
    # registers the same op.
    proc = run_python(f'''
import numpy as np, tensorflow as tf
from tensorflow.python.framework import kernels
op = tf.load_op_library({path!r})
registered = kernels.get_registered_kernels_for_op('TfMpConcat').kernel
print(sorted({{(k.device_type, k.constraint[0].allowed_values.list.type[0])
               for k in registered}}))
a, b = tf.random.normal([300, 7]), tf.random.normal([300, 0])
c = tf.random.normal([300, 1000])
with tf.device('cpu:0'):
  same = np.array_equal(op.tf_mp_concat([a, b, c]), tf.concat([a, b, c], -1))
print('equal' if same else 'DIFFERENT')
''')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    # float, double, half, bfloat16 on each device.
    want = sorted((device, dtype) for device in ('CPU', 'GPU')
                  for dtype in (1, 2, 19, 14))
    self.assertEqual(lines[0], str(want))
    self.assertEqual(lines[1], 'equal')

  def test_cuda_probe(self):
    info = cache.read_build_info(LIBRARY_DIR)
    problem = concat_lib.probe_cuda(os.path.join(LIBRARY_DIR,
                                                 info['gpu_probe']))
    if HAS_GPU:
      self.assertIsNone(problem)
    else:  # no driver here: the runtime says so, and the loader can tell
      self.assertRegex(problem, r'^CUDA runtime error \d+: \S.*')

  def test_gpu_seen_but_cuda_unusable_loads_the_cpu_library(self):
    if HAS_GPU:
      self.skipTest('the CUDA runtime works here')
    # A separate process: the op library can be loaded once per process.
    proc = run_python('''
import warnings
from unittest import mock
import tensorflow as tf
from tf_mp.ops import concat
real = tf.config.list_physical_devices
fake = lambda kind=None: ['a GPU'] if kind == 'GPU' else real(kind)
with mock.patch.object(tf.config, 'list_physical_devices', fake):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    library = concat.OpLibrary()
    library.load(required=True)
print(library.path)
print(len(caught), caught[0].message if caught else '')
''')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    path, warning = proc.stdout.splitlines()[-2:]
    self.assertEqual(path, os.path.join(LIBRARY_DIR, cache.CPU_LIBRARY))
    self.assertRegex(warning, r'^1 tf_mp: the CUDA kernel of the custom concat '
                     r'op cannot run \(CUDA runtime error \d+: .+\); using '
                     r'its CPU kernel only')

  def test_gpu_check_compiles_links_emulates_and_reports_a_missing_gpu(self):
    with tempfile.TemporaryDirectory() as tmp:
      def gpu_check(*args):
        return subprocess.run(
            [sys.executable, os.path.join(ROOT, 'tools', 'gpu_check.py'),
             '--build_dir', tmp, *args], capture_output=True, text=True,
            timeout=300, cwd=ROOT)
      proc = gpu_check()
      self.assertTrue(os.path.exists(os.path.join(tmp,
                                                  'libconcat_gpu_check.so')),
                      proc.stderr)
      # The kernel's per-element code, chunking and batching, on the host.
      emulated = gpu_check('--emulate')
    self.assertEqual(emulated.returncode, 0, emulated.stdout + emulated.stderr)
    self.assertIn('all equal', emulated.stdout)
    rows = [l for l in emulated.stdout.splitlines()
            if l.split()[-4:] == ['equal'] * 4]  # one column per dtype
    self.assertLen(rows, 9, emulated.stdout)
    if HAS_GPU:
      self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
      self.assertIn('all equal', proc.stdout)
    else:
      self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
      self.assertRegex(proc.stderr.strip(),
                       r'^gpu_check: no usable CUDA GPU: cudaGetDeviceCount '
                       r'says ".+" \(this check needs an NVIDIA GPU and a '
                       r'driver for CUDA \d+\.\d+ or newer\)$')
      self.assertNotIn('Traceback', proc.stderr)


class TutorialConcatTest(tf.test.TestCase):

  def test_concat_flag(self):
    """Same losses with --concat tf and custom; custom switched off fails."""

    def start(path, env_value='auto'):
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
                 TF_MP_CUSTOM_OPS=env_value)
      return subprocess.Popen(
          [sys.executable, os.path.join(ROOT, 'examples', 'tutorial.py'),
           '--steps', '41', '--log_every', '10', '--devices',
           'cpu:0,cpu:1,cpu:2', '--concat', path], stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    # Concurrently: most of each run is importing TensorFlow.
    procs = {'tf': start('tf'), 'custom': start('custom'),
             'off': start('custom', env_value='0')}
    out = {}
    for name, proc in procs.items():
      try:
        stdout, stderr = proc.communicate(timeout=300)
      finally:
        proc.kill()
      out[name] = (proc.returncode, stdout, stderr)

    losses = {}
    for path, op_type in (('tf', 'ConcatV2'), ('custom', 'TfMpConcat')):
      returncode, stdout, stderr = out[path]
      self.assertEqual(returncode, 0, stderr[-3000:])
      self.assertIn(f'concat: {op_type} (', stdout)
      losses[path] = [l for l in stdout.splitlines() if l.startswith('Step:')]
    self.assertLen(losses['tf'], 5)
    self.assertEqual(losses['tf'], losses['custom'])

    returncode, stdout, stderr = out['off']
    self.assertEqual(returncode, 1, stdout + stderr)
    self.assertRegex(stderr.strip().splitlines()[-1],
                     r'^tutorial\.py: error: the custom concat op was asked '
                     r'for but TF_MP_CUSTOM_OPS=0 disables custom ops$')
    self.assertNotIn('Traceback', stderr)


class GpuKernelTest(parameterized.TestCase, tf.test.TestCase):
  """The CUDA kernel through TensorFlow; runs only where a GPU is visible."""

  def setUp(self):
    super().setUp()
    if not HAS_GPU:
      self.skipTest('no GPU visible to TensorFlow')

  @parameterized.product(
      dtype=(tf.float32, tf.float16, tf.bfloat16, tf.float64),
      widths=((64, 64, 64), (1, 13, 2, 0, 5), (3,) * 40, (1024, 1024)))
  def test_gpu_bit_for_bit(self, dtype, widths):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    with mock.patch.dict(os.environ, {concat_lib.ENV_VAR: '1'}):
      with tf.device('gpu:0'):
        values = [tf.cast(rng.normal(size=(129, w)), dtype) for w in widths]
        got = concat_lib.fused_concat(values)
        want = tf.concat(values, -1)
    self.assertIn('GPU', got.device)
    self.assertEndsWith(concat_lib.loaded_library(), cache.GPU_LIBRARY)
    bits = {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[dtype.size]
    self.assertAllEqual(tf.bitcast(got, bits), tf.bitcast(want, bits),
                        msg=f'seed {seed}')


if __name__ == '__main__':
  tf.test.main()
