"""The custom TfMpConcat op: values, gradients, placement, fallback, bad input.

`setUpModule` builds the op (a no-op when it is up to date), or skips every
test here when no C++ compiler works (`tests/op_testing.py`).
"""

import json
import os
import shutil
import tempfile
from unittest import mock
import warnings

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import op_testing
import tf_mp
from testing import draw_seed
from tf_mp.ops import build as build_lib
from tf_mp.ops import cache
from tf_mp.ops import concat as concat_lib

DTYPES = (tf.float32, tf.float16, tf.bfloat16, tf.float64)
_BITS = {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}
OP = None  # the loaded op module
LIBRARY_DIR = None  # where the build put it


def setUpModule():
  global OP, LIBRARY_DIR
  LIBRARY_DIR = op_testing.build_or_skip().directory
  with mock.patch.dict(os.environ, {concat_lib.ENV_VAR: 'auto'}):
    OP = concat_lib._LIBRARY.load(required=True)


def random_bits(rng, shape, dtype):
  """Random bit patterns as `dtype`: NaN payloads, infinities, denormals too."""
  bits = _BITS[dtype.size]
  raw = rng.integers(0, np.iinfo(bits.as_numpy_dtype).max, size=shape,
                     dtype=bits.as_numpy_dtype, endpoint=True)
  return tf.bitcast(tf.constant(raw), dtype)


def as_bits(tensor):
  return tf.bitcast(tensor, _BITS[tensor.dtype.size]).numpy()



# (name, leading dimensions, last dimensions of the inputs)
SHAPE_CASES = (
    ('rank1', (), (3, 0, 5)),
    ('model', (64,), (64, 64, 64)),
    ('uneven_five', (7,), (1, 13, 2, 0, 5)),
    ('rank3', (2, 3), (4, 0)),
    ('rank4_one_input', (2, 1, 3), (5,)),
    ('zero_rows', (0,), (3, 4)),
    ('all_zero_width', (5,), (0, 0)),
    # Over 4096 elements: sharded over worker threads, shards end mid-row.
    ('sharded_odd_widths', (1031,), (3, 517, 0, 129)),
    ('sharded_rank1', (), (40000, 1, 9999)),
)


class ValuesTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.product(case=SHAPE_CASES, dtype=DTYPES)
  def test_table_bit_for_bit(self, case, dtype):
    _, leading, widths = case
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    values = [random_bits(rng, leading + (w,), dtype) for w in widths]
    got = tf_mp.ops.fused_concat(values)
    want = tf.concat(values, axis=-1)
    self.assertEqual(got.shape, want.shape)
    self.assertEqual(got.dtype, dtype)
    np.testing.assert_array_equal(as_bits(got), as_bits(want),
                                  err_msg=f'seed {seed}')

  @parameterized.named_parameters(
      (dtype.name, dtype) for dtype in DTYPES)
  def test_random_shapes_bit_for_bit(self, dtype):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    for trial in range(25):
      rank = int(rng.integers(1, 5))
      leading = tuple(int(d) for d in rng.integers(0, 5, size=rank - 1))
      widths = [int(w) for w in rng.integers(0, 8, size=rng.integers(1, 6))]
      values = [random_bits(rng, leading + (w,), dtype) for w in widths]
      np.testing.assert_array_equal(
          as_bits(OP.tf_mp_concat(values)),
          as_bits(tf.concat(values, axis=-1)),
          err_msg=f'seed {seed} trial {trial}: {leading} {widths}')

  @parameterized.named_parameters(
      ('unknown_batch', [None, 3], [None, 5], [None, 8]),
      ('unknown_width', [4, None], [4, 5], [4, None]),
      ('unknown_rank', None, [4, 5], [4, None]),
      ('rank3_unknown_leading', [None, None, 2], [None, 3, 1], [None, 3, 3]),
  )
  def test_unknown_shapes_in_tf_function(self, spec_a, spec_b, want_shape):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    fn = tf.function(lambda a, b: tf_mp.ops.fused_concat([a, b]))
    concrete = fn.get_concrete_function(tf.TensorSpec(spec_a, tf.float32),
                                        tf.TensorSpec(spec_b, tf.float32))
    self.assertEqual(concrete.output_shapes.as_list(), want_shape)
    self.assertIn('TfMpConcat',
                  [op.type for op in concrete.graph.get_operations()])
    b_shape = [4 if d is None else d for d in spec_b]
    a_shape = b_shape[:-1] + [2]
    a = random_bits(rng, a_shape, tf.float32)
    b = random_bits(rng, b_shape, tf.float32)
    np.testing.assert_array_equal(as_bits(concrete(a, b)),
                                  as_bits(tf.concat([a, b], -1)),
                                  err_msg=f'seed {seed}')


class GradientTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ('float64', tf.float64, 1e-8),
      ('float32', tf.float32, 2e-3),
  )
  def test_compute_gradient(self, dtype, tolerance):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    xs = [tf.constant(rng.normal(size=(3, w)), dtype) for w in (2, 0, 4)]
    theoretical, numerical = tf.test.compute_gradient(
        lambda a, b, c: tf_mp.ops.fused_concat([a, b, c]) ** 2, xs)
    for t, n in zip(theoretical, numerical):
      self.assertAllClose(t, n, atol=tolerance, rtol=tolerance,
                          msg=f'seed {seed}')

  def test_gradient_equals_tf_concat_with_unknown_width(self):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    a = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    b = tf.constant(rng.normal(size=(5, 6)), tf.float32)
    weights = tf.constant(rng.normal(size=(5, 9)), tf.float32)

    def grads(concat):
      # One width known only when running, one known while tracing.
      @tf.function(input_signature=[tf.TensorSpec([None, None]),
                                    tf.TensorSpec([None, 6])])
      def fn(x, y):
        return tf.gradients(tf.reduce_sum(concat([x, y]) * weights), [x, y])
      return fn(a, b)

    custom = grads(OP.tf_mp_concat)
    reference = grads(lambda v: tf.concat(v, -1))
    for c, r in zip(custom, reference):
      self.assertAllEqual(c, r, msg=f'seed {seed}')

  def test_full_model_gradients_equal_on_either_path(self):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(16, 128)), tf.float32)
    y = tf.constant(rng.integers(0, 10, size=16), tf.int32)
    results = {}
    for path in ('tf', 'custom'):
      model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'], concat=path)
      trainer = tf_mp.Trainer(model)

      # pylint: disable=cell-var-from-loop
      @tf.function
      def step():
        loss = trainer.compute_loss(x, y)
        return loss, tf.gradients(loss, model.trainable_variables)
      # pylint: enable=cell-var-from-loop

      loss, grads = step()
      names = [v.name for v in model.trainable_variables]
      results[path] = (loss, dict(zip(names, grads)))
      graph = step.get_concrete_function().graph
      want_op = 'TfMpConcat' if path == 'custom' else 'ConcatV2'
      self.assertIn(want_op, {op.type for op in graph.get_operations()})
    self.assertAllEqual(results['tf'][0], results['custom'][0])
    self.assertEqual(results['tf'][1].keys(), results['custom'][1].keys())
    for name, grad in results['tf'][1].items():
      self.assertAllEqual(grad, results['custom'][1][name],
                          msg=f'{name}, seed {seed}')


class PlacementTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.parameters('cpu:1', 'cpu:4')
  def test_runs_on_the_device_it_is_placed_on(self, device):
    a, b = tf.ones([2, 3]), tf.zeros([2, 1])
    with tf.device(device):
      eager = tf_mp.ops.fused_concat([a, b])
    self.assertEqual(tf.DeviceSpec.from_string(eager.device).device_index,
                     int(device[-1]))

    @tf.function
    def fn(x, z):
      with tf.device(device):
        return tf_mp.ops.fused_concat([x, z])

    graph = fn.get_concrete_function(a, b).graph
    ops = [op for op in graph.get_operations() if op.type == 'TfMpConcat']
    self.assertLen(ops, 1)
    self.assertEqual(ops[0].device, tf_mp.canonical_device(device))
    self.assertAllEqual(fn(a, b), tf.concat([a, b], -1))

  def test_report_names_the_concat_that_ran(self):
    for path, op_type in (('custom', 'TfMpConcat'), ('tf', 'ConcatV2'),
                          ('auto', 'TfMpConcat')):
      model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'],
                                output_device='cpu:4', concat=path)
      report = tf_mp.placement_report(model)
      self.assertEqual(report.concat_op, op_type)
      self.assertEqual(report.concat_devices, ['/device:CPU:4'])
      self.assertIn(f'concat: {op_type} (', str(report))


class FallbackTest(parameterized.TestCase, tf.test.TestCase):
  """A fresh `OpLibrary` over a directory made to fail in one way each."""

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(prefix='tf_mp_ops_')
    self.addCleanup(shutil.rmtree, self.dir)
    self.info = cache.read_build_info(LIBRARY_DIR)
    self.env = self.enter_context(
        mock.patch.dict(os.environ, {concat_lib.ENV_VAR: 'auto'}))

  def use(self, **info_changes):
    """Makes fused_concat load from self.dir with a changed build_info."""
    info = dict(self.info, **info_changes)
    with open(os.path.join(self.dir, cache.BUILD_INFO), 'w') as f:
      json.dump(info, f)
    library = concat_lib.OpLibrary(self.dir)
    self.enter_context(mock.patch.object(concat_lib, '_LIBRARY', library))
    return library

  def assert_warns_once_and_falls_back(self, reason):
    a = tf.ones([2, 3])
    b = tf.range(4.0)[None, :] * [[1.0], [2.0]]
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      first = tf_mp.ops.fused_concat([a, b])
      second = tf_mp.ops.fused_concat([b, a])
    self.assertLen(caught, 1, [str(w.message) for w in caught])
    self.assertIs(caught[0].category, RuntimeWarning)
    self.assertRegex(str(caught[0].message), reason)
    self.assertAllEqual(first, tf.concat([a, b], -1))
    self.assertAllEqual(second, tf.concat([b, a], -1))

  def test_never_built(self):
    library = concat_lib.OpLibrary(self.dir)
    self.enter_context(mock.patch.object(concat_lib, '_LIBRARY', library))
    self.assert_warns_once_and_falls_back(
        r'not found: the op is not built\); using tf\.concat instead\. '
        r'`python -m tf_mp\.ops\.build` builds it; TF_MP_CUSTOM_OPS=0 '
        r'silences this warning\.$')

  def test_build_info_damaged(self):
    # A JSONDecodeError traceback (118 lines with --concat auto) before.
    with open(os.path.join(self.dir, cache.BUILD_INFO), 'w') as f:
      f.write('{oops')
    self.enter_context(mock.patch.object(concat_lib, '_LIBRARY',
                                         concat_lib.OpLibrary(self.dir)))
    self.assert_warns_once_and_falls_back(
        r'build_info\.json cannot be read \(JSONDecodeError: Expecting property name')

  def test_library_renamed(self):
    self.use()
    shutil.copyfile(os.path.join(LIBRARY_DIR, cache.CPU_LIBRARY),
                    os.path.join(self.dir, 'renamed_concat_op.so'))
    self.assert_warns_once_and_falls_back(
        r'_concat_op(_gpu)?\.so not found \(renamed or deleted')

  def test_built_for_another_tensorflow(self):
    self.use(tf_version='2.0.0')
    with open(os.path.join(self.dir, cache.CPU_LIBRARY), 'wb') as f:
      f.write(b'never loaded')
    self.assert_warns_once_and_falls_back(
        r'built against TensorFlow 2\.0\.0 .*running ' +
        tf.__version__.replace('.', r'\.'))

  def test_library_that_does_not_load(self):
    self.use()
    for name in (cache.CPU_LIBRARY, cache.GPU_LIBRARY):
      with open(os.path.join(self.dir, name), 'wb') as f:
        f.write(b'not an ELF file')
    self.assert_warns_once_and_falls_back(
        r'loading .*_concat_op(_gpu)?\.so failed')

  def test_required_by_the_environment_raises(self):
    self.use()
    os.environ[concat_lib.ENV_VAR] = '1'
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      with self.assertRaisesRegex(tf_mp.TfMpError, 'not usable: .*not found'):
        tf_mp.ops.fused_concat([tf.ones([1, 1])])
    self.assertEmpty(caught)

  def test_required_by_build_model_raises(self):
    self.use()
    with self.assertRaisesRegex(
        tf_mp.TfMpError, r'not usable: .*not found.*; `python -m '
        r'tf_mp\.ops\.build` builds it$'):
      tf_mp.build_model(['cpu:0'] * 3, concat='custom')

  def test_environment_zero_uses_tf_concat_silently(self):
    os.environ[concat_lib.ENV_VAR] = '0'
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      fn = tf.function(lambda x: tf_mp.ops.fused_concat([x, x]))
      graph = fn.get_concrete_function(tf.TensorSpec([2, 3])).graph
    self.assertEmpty(caught)
    types = {op.type for op in graph.get_operations()}
    self.assertIn('ConcatV2', types)
    self.assertNotIn('TfMpConcat', types)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'TF_MP_CUSTOM_OPS=0'):
      tf_mp.build_model(['cpu:0'] * 3, concat='custom')

  @parameterized.parameters('yes', '2', 'true')
  def test_bad_environment_value(self, value):
    os.environ[concat_lib.ENV_VAR] = value
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                f"TF_MP_CUSTOM_OPS='{value}' is not one of"):
      tf_mp.ops.fused_concat([tf.ones([1, 1])])

  def test_bad_concat_path(self):
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                "concat 'fast' is not one of"):
      tf_mp.build_model(['cpu:0'] * 3, concat='fast')


class BadInputTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ('rank0', lambda: [tf.ones([]), tf.ones([])], r'scalar.*\(\), \(\)'),
      ('leading_dims', lambda: [tf.ones([2, 3]), tf.ones([4, 3])],
       r'\(2, 3\), \(4, 3\).*leading'),
      ('ranks', lambda: [tf.ones([2, 3]), tf.ones([2, 3, 1])],
       r'different ranks \(shapes \(2, 3\), \(2, 3, 1\)\)'),
      ('dtypes', lambda: [tf.ones([2, 3]), tf.ones([2, 3], tf.float64)],
       r'different dtypes \(float32\(2, 3\), float64\(2, 3\)\)'),
      ('empty', lambda: [], 'values is empty'),
      ('not_a_list', lambda: tf.ones([2, 3]), 'must be a list'),
      ('int32', lambda: [tf.ones([2], tf.int32)], 'dtype int32 is not supp'),
  )
  def test_fused_concat_rejects(self, make_values, message):
    for env in ('auto', '0'):  # the same error on either path
      with mock.patch.dict(os.environ, {concat_lib.ENV_VAR: env}):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
          tf_mp.ops.fused_concat(make_values())
        with self.assertRaisesRegex(tf_mp.TfMpError, message):
          tf_mp.ops.fused_concat(make_values())

  @parameterized.named_parameters(
      ('rank0', [[], []], r'scalar; .*got shapes \[\], \[\]'),
      ('leading_dims', [[2, 3], [4, 3]],
       r'dimension 0; expected equal leading dimensions, got shapes '
       r'\[2,3\], \[4,3\]'),
      ('ranks', [[2, 3], [2, 3, 1]],
       r'has rank 3, input 0 rank 2; .*got shapes \[2,3\], \[2,3,1\]'),
  )
  def test_the_op_itself_rejects(self, shapes, message):
    values = [tf.ones(s) for s in shapes]
    # Eagerly: the kernel.
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
      OP.tf_mp_concat(values)
    # Traced with unknown shapes: the kernel, when the graph runs.
    fn = tf.function(lambda v: OP.tf_mp_concat(v)).get_concrete_function(
        [tf.TensorSpec(None)] * len(values))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
      fn(values)
    # Traced with known shapes: the shape function, while tracing (TensorFlow
    # reports shape-function errors as ValueError).
    with self.assertRaisesRegex(ValueError, r'TfMpConcat: .*got shapes'):
      tf.function(lambda v: OP.tf_mp_concat(v)).get_concrete_function(
          [tf.TensorSpec(s) for s in shapes])

  def test_the_op_itself_rejects_mismatched_dtypes_and_no_inputs(self):
    with self.assertRaisesRegex((tf.errors.InvalidArgumentError, TypeError),
                                'float|double'):
      OP.tf_mp_concat([tf.ones([2, 3]), tf.ones([2, 3], tf.float64)])
    with self.assertRaises((tf.errors.InvalidArgumentError, ValueError)):
      OP.tf_mp_concat([])


if __name__ == '__main__':
  tf.test.main()
