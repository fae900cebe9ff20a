"""Every public function answers a bad argument with one TfMpError line naming the value.

One table drives the cases (in-process, no training, so it stays fast): each
row is a call and a fragment of the one-line message it must raise. The cases
come from an adversarial run over the public API (raw `TypeError`s,
`AttributeError`s, TensorFlow errors, or silent acceptance before).
"""

import functools
import gc
import io
import os
import tempfile
import zipfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp import lm
from tf_mp.memory import check_parameters_fit

NAN = float('nan')
SMALL = tf_mp.ModelConfig(input_units=16, num_classes=4,
                          sub_models=(tf_mp.SubModelConfig(8, 4),) * 3)
X = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
Y = np.arange(8, dtype=np.int64) % 4


# Built on first use and shared by the cases (building is the slow part).
@functools.lru_cache(None)
def model():
  return tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'], SMALL)


@functools.lru_cache(None)
def trainer():
  return tf_mp.Trainer(model())


@functools.lru_cache(None)
def pipeline():
  return tf_mp.pipeline.build_pipeline('cpu:0,cpu:1,cpu:2', num_micro_batches=4)


@functools.lru_cache(None)
def tiny_lm():
  config = lm.LMConfig(vocab_size=20, context=16, d_model=16, num_heads=2,
                       num_blocks=1, mlp_units=32)
  return lm.build_lm(config, 'cpu:0')


def huge_npz() -> str:
  """A few hundred bytes whose 'x' header claims [10**12, 128] float32 (512 TB)."""
  path = os.path.join(scratch(), 'huge.npz')
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {'descr': '<f4', 'fortran_order': False, 'shape': (10**12, 128)})
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('x.npy', header.getvalue() + bytes(64))
    archive.writestr('y.npy', header.getvalue())
  return path


@functools.lru_cache(None)
def keras_model():
  model = tf_mp.keras.build_model('cpu:0', SMALL)
  tf_mp.keras.compile_document(model)
  return model


@functools.lru_cache(None)
def scratch() -> str:
  return tempfile.mkdtemp(prefix='api_errors_')


def _file_in(directory: str) -> str:
  """A plain file in `directory` (where a folder is expected)."""
  path = os.path.join(directory, 'f')
  with open(path, 'w') as f:
    f.write('x')
  return path


def ids(value, shape=(2, 16), dtype=np.int32):
  return np.full(shape, value, dtype)


# name, call, a fragment of the one-line message.
_CASES = (
    # Devices.
    ('canonical_negative', lambda: tf_mp.canonical_device('cpu:-1'),
     "device name 'cpu:-1' has no device index >= 0"),
    ('canonical_huge', lambda: tf_mp.canonical_device('cpu:99999999999999999999'),
     "device name 'cpu:99999999999999999999' has index 99999999999999999999; "
     'expected an index from 0 to 2147483647'),
    ('canonical_no_index', lambda: tf_mp.canonical_device('cpu'),
     "device name 'cpu' has no device index"),
    ('resolve_count_text', lambda: tf_mp.resolve_devices('cpu:0', 'x'),
     "count must be a positive integer, got 'x'"),
    ('resolve_number', lambda: tf_mp.resolve_devices(123, 3),
     'devices 123 is not a device list'),
    ('resolve_too_many', lambda: tf_mp.resolve_devices('cpu:0,cpu:1', 1),
     "devices 'cpu:0,cpu:1' name 2 devices but only 1 is used (one per placement)"),
    ('logical_cpus_text', lambda: tf_mp.ensure_logical_cpus('x'),
     "count of logical CPUs must be a positive integer, got 'x'"),
    ('logical_cpus_none', lambda: tf_mp.ensure_logical_cpus(None),
     'count of logical CPUs must be a positive integer, got None'),
    ('logical_cpus_negative', lambda: tf_mp.ensure_logical_cpus(-1),
     'count of logical CPUs must be a positive integer, got -1'),
    ('device_groups_size_zero', lambda: tf_mp.distribute.parse_device_groups('auto', 0),
     'group_size must be a positive integer, got 0'),
    ('device_groups_size_text', lambda: tf_mp.distribute.parse_device_groups('cpu:0', 'x'),
     "group_size must be a positive integer, got 'x'"),
    # Too many devices: one line saying how many are given and used.
    ('model_four_devices', lambda: tf_mp.build_model('cpu:0,cpu:1,cpu:2,cpu:3', SMALL),
     "devices 'cpu:0,cpu:1,cpu:2,cpu:3' name 4 devices but only 3 are used "
     '(one per sub-model); expected at most 3'),
    ('model_four_in_a_list', lambda: tf_mp.build_model(['cpu:0'] * 4, SMALL),
     'name 4 devices but only 3 are used (one per sub-model)'),
    ('pipeline_four_devices',
     lambda: tf_mp.pipeline.build_pipeline('cpu:0,cpu:1,cpu:2,cpu:3'),
     'name 4 devices but only 3 are used (one per stage)'),
    ('keras_four_devices', lambda: tf_mp.keras.build_model('cpu:0,cpu:1,cpu:2,cpu:3'),
     'name 4 devices but only 3 are used (one per sub-model)'),
    ('strategy_none_four_devices',
     lambda: tf_mp.distribute.create_strategy('none', 'cpu:0,cpu:1,cpu:2,cpu:3'),
     'name 4 devices but only 3 are used (one per sub-model)'),
    ('mirrored_group_of_four',
     lambda: tf_mp.distribute.create_strategy('mirrored', 'cpu:0,cpu:1,cpu:2,cpu:3;cpu:4'),
     'name 4 devices but only 3 are used'),
    ('remote_job_without_cluster',
     lambda: tf_mp.build_model('/job:worker/task:1/device:CPU:0', SMALL),
     "device '/job:worker/task:1/device:CPU:0' is on job 'worker', but this "
     'process is in no cluster with that job'),
    # Another task or replica of localhost: "unknown device" at the first tensor before.
    ('local_job_other_task',
     lambda: tf_mp.build_model('/job:localhost/replica:0/task:1/device:CPU:0', SMALL),
     "device '/job:localhost/replica:0/task:1/device:CPU:0' names task 1 of job "
     'localhost, but this process is task 0; expected a local device such as "cpu:0"'),
    ('local_job_other_replica',
     lambda: tf_mp.resolve_devices('cpu:0,/job:localhost/replica:2/device:CPU:1', 2),
     'names replica 2 of job localhost, but this process is replica 0'),
    ('strategy_none_remote_job',
     lambda: tf_mp.distribute.create_strategy('none', '/job:worker/task:1/device:CPU:0'),
     "is on job 'worker'"),
    # Not a device request at all.
    ('pipeline_number', lambda: tf_mp.pipeline.build_pipeline(123),
     'devices 123 is not a device list'),
    ('lm_number', lambda: lm.build_lm(None, 123), 'devices 123 is not a device list'),
    ('keras_number', lambda: tf_mp.keras.build_model(123), 'devices 123 is not a device list'),
    # Sizes far beyond the machine: refused before anything is allocated.
    ('dense_huge', lambda: tf_mp.Dense(10**6, 10**6),
     'Dense(1000000, 1000000) has 1,000,001,000,000 parameters, which need about'),
    ('config_huge_input', lambda: tf_mp.ModelConfig(input_units=10**9),
     'ModelConfig has 768,000,'),
    ('config_huge_hidden', lambda: tf_mp.ModelConfig(
        sub_models=(tf_mp.SubModelConfig(hidden_units=10**8),)), 'ModelConfig has'),
    ('config_huge_classes', lambda: tf_mp.ModelConfig(num_classes=2**40),
     'ModelConfig has 212,'),
    ('pipeline_config_huge',
     lambda: tf_mp.pipeline.PipelineConfig(stages=((10**6,), (10**6,))),
     'PipelineConfig has'),
    # The document's model and its parts.
    ('dense_zero', lambda: tf_mp.Dense(0, 4),
     'Dense input_units must be a positive integer, got 0'),
    ('dense_negative', lambda: tf_mp.Dense(4, -1),
     'Dense output_units must be a positive integer, got -1'),
    ('dense_text', lambda: tf_mp.Dense('a', 4),
     "Dense input_units must be a positive integer, got 'a'"),
    ('dense_device', lambda: tf_mp.Dense(4, 4, device='cpu:-1'),
     "device name 'cpu:-1' has no device index"),
    ('dense_seed', lambda: tf_mp.Dense(4, 4, seed=NAN), 'Dense seed must be an integer, got nan'),
    ('dense_activation', lambda: tf_mp.Dense(4, 4, activation=5),
     'Dense activation must be a function (or None), got 5'),
    ('dense_call_width', lambda: tf_mp.Dense(4, 3)(np.ones((2, 5), np.float32)),
     'dense: inputs have shape [2, 5]; expected [..., 4]'),
    ('dense_call_int', lambda: tf_mp.Dense(4, 3)(np.ones((2, 4), np.int32)),
     'dense: inputs have dtype int32; expected float32'),
    ('dense_call_none', lambda: tf_mp.Dense(4, 3)(None),
     'dense: inputs None are not float32 numbers'),
    ('sub_model_seed', lambda: tf_mp.sub_model_1(seed='a'),
     "sub_model_1: seed must be an integer, got 'a'"),
    ('loss_none', lambda: tf_mp.sparse_softmax_loss(None, None),
     'sparse_softmax_loss: logits None must be a float tensor'),
    ('loss_shapes', lambda: tf_mp.sparse_softmax_loss(tf.zeros([2, 10]),
                                                      tf.zeros([3], tf.int64)),
     "sparse_softmax_loss: labels have shape [3]; expected the logits' shape "
     'without its last axis [2]'),
    ('loss_label', lambda: tf_mp.sparse_softmax_loss(tf.zeros([2, 10]),
                                                     tf.constant([99, 0], tf.int64)),
     'sparse_softmax_loss: label 99 is outside [0, 10)'),
    # Training.
    ('trainer_strategy_text', lambda: tf_mp.Trainer(model(), strategy='mirrored'),
     "strategy must be a tf_mp.distribute.StrategyLayout (from create_strategy) "
     "or None, got 'mirrored'"),
    ('trainer_bool_rate', lambda: tf_mp.Trainer(model(), True),
     'learning_rate must be a finite number > 0, got True'),
    ('trainer_zero_rate', lambda: tf_mp.Trainer(model(), 0),
     'learning_rate must be a finite number > 0, got 0'),
    ('fit_on_log', lambda: trainer().fit(X, Y, steps=1, on_log=5),
     'on_log must be a function (or None), got 5'),
    ('placement_trainer', lambda: tf_mp.placement_report(model(), 5),
     'trainer must be a tf_mp.Trainer, got 5'),
    ('placement_other_trainer',
     lambda: tf_mp.placement_report(model(), tf_mp.Trainer(tf_mp.build_model('cpu:0', SMALL))),
     'trainer trains a different model than the one given'),
    # Data.
    ('batch_indices_overflow', lambda: tf_mp.batch_indices(2**63, 4, 10),
     'step 9223372036854775808 with batch_size 4 passes row'),
    ('data_identity_none', lambda: tf_mp.data_identity(None, None),
     "'x' must be an array of numbers, got None"),
    # numpy's 24-line _ArrayMemoryError traceback before.
    ('load_npz_larger_than_memory', lambda: tf_mp.load_npz(huge_npz()),
     'holds an array larger than the memory available (Unable to allocate'),
    ('load_npz_width', lambda: tf_mp.load_npz('x.npz', input_units=0),
     'input_units must be a positive integer, got 0'),
    # Checkpoints.
    ('checkpoints_trainer', lambda: tf_mp.TrainingCheckpoints(
        os.path.join(scratch(), 'c0'), None), 'trainer must be a tf_mp.Trainer, got None'),
    ('resume_trainer', lambda: tf_mp.resume_training(os.path.join(scratch(), 'c1'), None),
     'trainer must be a tf_mp.Trainer, got None'),
    ('resume_layout', lambda: tf_mp.resume_training(os.path.join(scratch(), 'c2'),
                                                    trainer(), 5),
     'layout must be a tf_mp.distribute.StrategyLayout or None, got 5'),
    ('tf1_load_model', lambda: tf_mp.compat.v1.load_tf1_checkpoint(None, 'm.ckpt'),
     'model must be a tf.Module, e.g. tf_mp.build_model(...), got None'),
    ('tf1_save_model', lambda: tf_mp.compat.v1.save_tf1_checkpoint(None, 'm.ckpt'),
     'model must be a tf.Module'),
    ('tf1_load_trainer', lambda: tf_mp.compat.v1.load_tf1_checkpoint(model(), 'm.ckpt', 5),
     'trainer must be a tf_mp.Trainer, got 5'),
    # Distribution.
    ('tf_config_number', lambda: tf_mp.distribute.parse_tf_config(123),
     'TF_CONFIG must be a JSON string, got 123'),
    ('ports_negative', lambda: tf_mp.distribute.free_loopback_ports(-1),
     'count of ports must be an integer >= 0, got -1'),
    ('strategy_peer_timeout',
     lambda: tf_mp.distribute.create_strategy('none', 'cpu:0', peer_timeout=NAN),
     'peer timeout must be a finite number of seconds >= 0'),
    # The pipeline.
    ('pipeline_stages_number', lambda: tf_mp.pipeline.PipelineConfig(stages=5),
     'PipelineConfig.stages must be a non-empty sequence of non-empty width tuples'),
    ('pipeline_seed_text', lambda: tf_mp.pipeline.PipelineConfig(seed='x'),
     "PipelineConfig.seed must be an integer, got 'x'"),
    ('pipeline_seed_nan', lambda: tf_mp.pipeline.PipelineConfig(seed=NAN),
     'PipelineConfig.seed must be an integer, got nan'),
    ('pipeline_remat', lambda: tf_mp.pipeline.build_pipeline('cpu:0', remat='yes'),
     "remat must be True or False, got 'yes'"),
    ('pipeline_batch_none', lambda: pipeline().check_batch_size(None),
     'batch_size must be a positive integer, got None'),
    ('pipeline_batch_huge', lambda: pipeline().check_batch_size(10**12),
     'batch size 1000000000000 makes activations of 256,000,000,000,000 elements'),
    ('bubble_no_stages', lambda: tf_mp.pipeline.theoretical_bubble(0, 4),
     'num_stages must be a positive integer, got 0'),
    ('bubble_no_micro_batches', lambda: tf_mp.pipeline.theoretical_bubble(3, 0),
     'num_micro_batches must be a positive integer, got 0'),
    ('bubble_text', lambda: tf_mp.pipeline.theoretical_bubble('a', 2),
     "num_stages must be a positive integer, got 'a'"),
    ('bubble_fraction', lambda: tf_mp.pipeline.theoretical_bubble(3, 1.5),
     'num_micro_batches must be a positive integer, got 1.5'),
    ('split_empty', lambda: tf_mp.pipeline.best_split([], 2),
     'times must be a non-empty list of layer costs, got []'),
    ('split_none', lambda: tf_mp.pipeline.best_split(None, 2),
     'times must be a non-empty list of layer costs, got None'),
    ('split_zero_parts', lambda: tf_mp.pipeline.best_split([1.0, 2.0], 0),
     'parts must be a positive integer, got 0'),
    ('split_too_many_parts', lambda: tf_mp.pipeline.best_split([1.0, 2.0], 5),
     'parts 5 is more than the 2 layers'),
    ('split_nan', lambda: tf_mp.pipeline.best_split([NAN, 1.0], 2),
     'times[0] must be a finite number >= 0, got nan'),
    ('split_negative', lambda: tf_mp.pipeline.best_split([-1.0, 1.0], 2),
     'times[0] must be a finite number >= 0, got -1.0'),
    ('split_parts_text', lambda: tf_mp.pipeline.best_split([1, 2], 'x'),
     "parts must be a positive integer, got 'x'"),
    # Reports.
    ('device_time_none', lambda: tf_mp.reports.device_time_report(pipeline(), None, None),
     "device_time_report: 'x' has shape []"),
    ('device_time_int', lambda: tf_mp.reports.device_time_report(
        pipeline(), np.zeros((8, 128), np.int32), np.zeros(8, np.int32)),
     "device_time_report: 'x' has dtype int32; expected float32"),
    ('table_none', lambda: tf_mp.reports.format_table(None),
     'rows must be a non-empty list of rows of strings, got None'),
    ('table_ragged', lambda: tf_mp.reports.format_table([['a', 'b'], ['c']]),
     'row 1 has 1 cells; expected 2 like the header'),
    # Keras.
    ('keras_compile_none', lambda: tf_mp.keras.compile_document(None),
     'model must be a Keras model, e.g. tf_mp.keras.build_model(), got None'),
    ('keras_compile_rate', lambda: tf_mp.keras.compile_document(
        tf_mp.keras.build_model('cpu:0'), -1),
     'learning_rate must be a finite number > 0, got -1'),
    ('keras_step_dataset_int', lambda: tf_mp.keras.step_dataset(X.astype(np.int32), Y, 5),
     "step_dataset: 'x' has dtype int32; expected float32"),
    # Cast to int32, these labels wrapped around (2**32 + 3 became 3) silently.
    ('keras_step_dataset_label_beyond_int32', lambda: tf_mp.keras.step_dataset(
        X, np.full(8, 2**32 + 3), 5),
     'step_dataset: label 4294967299 at row 0 is outside [0, 2147483648) (labels are int32)'),
    ('keras_step_dataset_steps_beyond_int64', lambda: tf_mp.keras.step_dataset(X, Y, 2**70),
     'step_dataset: steps 1180591620717411303424 is larger than 2^63 - 1'),
    ('keras_on_device_twice', lambda: tf_mp.keras.on_device(tf_mp.keras.on_device(
        keras.layers.Dense(4, name='d'), 'cpu:0'), 'cpu:1'),
     "on_device: 'd' is already placed on /device:CPU:0; expected a layer that is not wrapped"),
    ('keras_weights_of_a_number', lambda: tf_mp.keras.keras_weights(5),
     'keras_weights: model must be a Keras model or layer, got 5 (it has no weights)'),
    ('keras_distribute_over_a_number', lambda: keras_model().distribute_over(5),
     'distribute_over: layout must be a tf_mp.distribute.StrategyLayout'),
    ('keras_step_logger_print_fn', lambda: tf_mp.keras.StepLogger(10, print_fn=5),
     'StepLogger: print_fn must be a function (or None), got 5'),
    ('keras_report_batch_width', lambda: tf_mp.keras.placement_report(
        keras_model(), X[:, :10], Y),
     'placement_report: inputs have shape [8, 10]; the model expects [batch, 16]'),
    ('keras_report_labels_length', lambda: tf_mp.keras.placement_report(
        keras_model(), X, Y[:2]),
     'placement_report: x has shape [8, 16] but y has [2]; expected one label per row'),
    ('keras_report_bad_batch_after_a_trace', lambda: (
        tf_mp.keras.placement_report(keras_model(), X, Y),
        tf_mp.keras.placement_report(keras_model(), X[:, :10], Y)),
     'placement_report: inputs have shape [8, 10]; the model expects [batch, 16]'),
    ('keras_step_dataset_batch_beyond_the_data', lambda: tf_mp.keras.step_dataset(X, Y, 5, 9),
     'step_dataset: batch_size 9 is larger than the 8 examples; expected at most 8'),
    ('keras_save_without_extension', lambda: keras_model().save(os.path.join(scratch(), 'm.txt')),
     "has no .keras (or .h5) extension; expected e.g. 'model.keras'"),
    ('keras_save_under_a_file', lambda: keras_model().save(
        os.path.join(_file_in(scratch()), 'm.keras')), 'exists and is not a directory'),
    ('keras_fit_label_outside_the_logits', lambda: keras_model().fit(
        X, np.full(8, 99), verbose=0), 'fit: label 99 is outside [0, 4); the model has 4 logits'),
    ('keras_fit_negative_label', lambda: keras_model().fit(X, -np.ones(8, np.int64), verbose=0),
     'fit: label -1 is outside [0, 4)'),
    ('keras_evaluate_label_outside_the_logits', lambda: keras_model().evaluate(
        X, np.full(8, 4), verbose=0), 'evaluate: label 4 is outside [0, 4)'),
    ('trainer_of_a_keras_model', lambda: tf_mp.Trainer(tf_mp.keras.build_model('cpu:0', SMALL)),
     'has weights that are not tf.Variables'),
    ('report_of_a_keras_model', lambda: tf_mp.placement_report(keras_model()),
     'has weights that are not tf.Variables'),
    # The tiny LM.
    ('lm_config_type', lambda: lm.build_lm(5, 'cpu:0'),
     'config must be a tf_mp.lm.LMConfig, got 5'),
    ('lm_config_seed', lambda: lm.build_lm(lm.LMConfig(seed='x'), 'cpu:0'),
     "LMConfig.seed must be an integer, got 'x'"),
    ('lm_ids_beyond_vocab', lambda: tiny_lm()(ids(999)),
     'TinyLM: ids contain 999; expected character ids in [0, 20)'),
    ('lm_ids_negative', lambda: tiny_lm()(ids(-1)),
     'TinyLM: ids contain -1; expected character ids in [0, 20)'),
    ('lm_ids_float', lambda: tiny_lm()(ids(0, dtype=np.float32)),
     'TinyLM: ids must be an integer array, got dtype float32'),
    ('lm_ids_too_long', lambda: tiny_lm()(ids(0, shape=(2, 40))),
     'TinyLM: ids have shape [2, 40]; expected [batch, time] with 1 <= time <= '
     'context 16'),
    ('lm_checkpoints_vocab', lambda: lm.LMCheckpoints(
        os.path.join(scratch(), 'lm'), lm.LMTrainer(tiny_lm()), None),
     'vocab must be a tf_mp.lm.CharVocab (corpus.vocab), got None'),
    ('lm_text_none', lambda: lm.load_text(None), 'text file None is not a path'),
    ('lm_text_directory', lambda: lm.load_text(scratch()), 'is a directory'),
    ('lm_text_device', lambda: lm.load_text('/dev/null'),
     "text file '/dev/null' is not a regular file"),
    ('lm_corpus_bytes', lambda: lm.prepare_corpus(b'bytes' * 100, 4),
     "text must be a str (decode bytes first), got b'bytes"),
    ('lm_temperature_inf', lambda: lm.check_sampling(
        lm.CharVocab.from_text('hello'), 'h', 5, float('inf')),
     'temperature must be a finite number >= 0, got inf'),
)


class BadArgumentTest(parameterized.TestCase, tf.test.TestCase):
  """Each call raises a one-line TfMpError containing its fragment."""

  @parameterized.named_parameters(*_CASES)
  def test_bad_call(self, call, fragment):
    with self.assertRaises(tf_mp.TfMpError) as caught:
      call()
    message = str(caught.exception)
    self.assertNotIn('\n', message)
    self.assertIn(fragment, message)


class SilentResultTest(tf.test.TestCase):
  """What used to return a wrong result without a word."""

  def test_lm_ids_out_of_vocabulary_are_asserted_inside_a_graph(self):
    model = tiny_lm()
    step = tf.function(model, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    self.assertEqual(step(tf.zeros([1, 5], tf.int32)).shape, [1, 5, 20])
    for bad in (tf.fill([1, 5], 20), tf.fill([1, 5], -1)):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                  r'ids must be character ids in \[0, 20\)'):
        step(bad)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                'ids are longer than context 16'):
      step(tf.zeros([1, 17], tf.int32))

  def test_parameter_estimate_against_the_memory_given(self):
    check_parameters_fit(1000, 'layer', available_bytes=16_000)
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                'layer has 1,001 parameters, which need about'):
      check_parameters_fit(1001, 'layer', available_bytes=16_000)

  def test_fewer_devices_are_still_used_round_robin(self):
    self.assertEqual(tf_mp.build_model('cpu:0', SMALL).devices, ['/device:CPU:0'] * 3)


class RestoreOtherShapeTest(tf.test.TestCase):
  """Resuming into a model of another shape: the TfMpError line and nothing else."""

  def test_no_tensorflow_warnings(self):
    directory = os.path.join(scratch(), 'other_shape')
    tf_mp.TrainingCheckpoints(directory, trainer()).save()
    other = tf_mp.Trainer(tf_mp.build_model(
        'cpu:0', tf_mp.ModelConfig(input_units=16, num_classes=5,
                                   sub_models=SMALL.sub_models)))
    # TensorFlow logged ~30 WARNING lines when the failed restore's
    # bookkeeping was freed: free everything inside the check.
    with self.assertNoLogs('tensorflow', level='WARNING'):
      with self.assertRaisesRegex(tf_mp.TfMpError, 'does not match this model'):
        tf_mp.resume_training(directory, other, log=lambda line: None)
      del other
      gc.collect()


if __name__ == '__main__':
  tf.test.main()


class ThreadModeTest(tf.test.TestCase):

  def test_unknown_thread_mode_is_one_line(self):
    from tf_mp import devices  # pylint: disable=g-import-not-at-top
    previous = os.environ.get(devices.THREADS_ENV)
    os.environ[devices.THREADS_ENV] = 'fastest'
    try:
      with self.assertRaisesRegex(tf_mp.TfMpError, "TF_MP_CPU_THREADS='fastest'; expected "
                                  'one of tensorflow, matched'):
        devices.match_threads_to_devices(3)
    finally:
      if previous is None:
        del os.environ[devices.THREADS_ENV]
      else:
        os.environ[devices.THREADS_ENV] = previous
