"""Every public function answers a bad argument with one TfMpError line naming the value.

One table drives the cases (in-process, no training, so it stays fast): each
row is a call and a fragment of the one-line message it must raise. The cases
come from an adversarial run over the public API (raw `TypeError`s,
`AttributeError`s, TensorFlow errors, or silent acceptance before).
"""

import errno
import functools
import gc
import importlib.util
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
from testing import run_python

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
class _OwnModel(tf.Module):
  """A user's model, `[batch, 16]` -> 4 logits; class attributes and `call` vary per case."""

  def __init__(self, dtype=tf.float32, call=None):
    super().__init__()
    self.w = tf.Variable(tf.zeros([16, 4], dtype), name='w')
    self._call = call

  def __call__(self, x):
    return self._call(self, x) if self._call else x @ self.w


def _own(call=None, dtype=tf.float32, **attributes):
  """An `_OwnModel` with `attributes` (input_spec, output_device, check_data, ...) set."""
  model = _OwnModel(dtype, call)
  for name, value in attributes.items():
    setattr(model, name, value)
  return model


def _raise(error):
  raise error


def _fit_own(model=None, **kwargs):
  fit_args = {k: kwargs.pop(k) for k in ('steps',) if k in kwargs}
  return tf_mp.Trainer(model or _own(), **kwargs).fit(X, Y, batch_size=4,
                                                      **{'steps': 2, **fit_args})


def _fit_in_function():
  trained = tf_mp.Trainer(_own())
  # (With autograph, TensorFlow wraps whatever a converted function raises in
  # a StagingError whose last line is this TfMpError's.)
  tf.function(lambda: trained.fit(X, Y, steps=1, batch_size=4), autograph=False)()


def _save_tf1_twice():
  prefix = os.path.join(tempfile.mkdtemp(dir=scratch()), 'model')
  tf_mp.compat.v1.save_tf1_checkpoint(model(), prefix)
  tf_mp.compat.v1.save_tf1_checkpoint(model(), prefix)


def _save_tf1_into_training_checkpoints():
  directory = tempfile.mkdtemp(dir=scratch())
  tf_mp.TrainingCheckpoints(directory, trainer()).save()
  tf_mp.compat.v1.save_tf1_checkpoint(model(), os.path.join(directory, 'model'))


def _diverged_model():
  diverged = tf_mp.build_model('cpu:0', SMALL)
  diverged.head.bias.assign(tf.fill([4], NAN))
  return diverged


def _restore_tf1_as_training_checkpoint():
  directory = tempfile.mkdtemp(dir=scratch())
  tf_mp.compat.v1.save_tf1_checkpoint(model(), os.path.join(directory, 'ckpt-7'))
  fresh = tf_mp.Trainer(tf_mp.build_model('cpu:0', SMALL))
  tf_mp.TrainingCheckpoints(directory, fresh).restore()


def _save_into_replaced_directory():
  directory = tempfile.mkdtemp(dir=scratch())
  fresh = tf_mp.Trainer(tf_mp.build_model('cpu:0', SMALL))
  checkpoints = tf_mp.TrainingCheckpoints(directory, fresh)
  os.rmdir(directory)
  with open(directory, 'w') as f:
    f.write('x')
  checkpoints.save()


def _lm_checkpoints_other_vocabulary():
  directory = tempfile.mkdtemp(dir=scratch())
  vocab = lm.CharVocab.from_text('abcdefghijklmnopqrst')
  lm.LMCheckpoints(directory, lm.LMTrainer(tiny_lm()), vocab).save()
  other = lm.CharVocab.from_text('ABCDEFGHIJKLMNOPQRST')
  lm.LMCheckpoints(directory, lm.LMTrainer(tiny_lm()), other)


class IntegerOutputs(tf_mp.keras.Model):
  """A Keras model whose outputs are integers: no gradient reaches its weights.

  (Public name: Keras names a model after its class, and TensorFlow refuses a
  scope name that starts with an underscore.)
  """

  def __init__(self):
    super().__init__()
    self.dense = tf_mp.keras.on_device(keras.layers.Dense(4), 'cpu:1')

  def call(self, x):
    return tf.cast(self.dense(x), tf.int32)


def _fit_keras(model_=None, x=X, y=Y, **kwargs):
  model_ = model_ or keras_model()
  if not getattr(model_, 'optimizer', None):
    tf_mp.keras.compile_document(model_)
  return model_.fit(x, y, epochs=1, verbose=0, **{'batch_size': 4, **kwargs})


def _nested_layouts():
  first = tf_mp.distribute.create_strategy('mirrored', 'cpu:0;cpu:1')
  second = tf_mp.distribute.create_strategy('mirrored', 'cpu:2;cpu:3')
  with first.scope(), second.scope():
    pass


def _trainer_in_function():
  own = _own()
  tf.function(lambda: tf_mp.Trainer(own) and None, autograph=False)()


def _export_other_width():
  own = _own()
  own.config = tf_mp.ModelConfig(input_units=3)  # the model takes 16
  tf_mp.export_saved_model(own, os.path.join(scratch(), 'other_width'))


def _keras_file() -> str:
  path = os.path.join(scratch(), 'existing.keras')
  keras_model().save(path)
  return path


def _save_diverged():
  directory = tempfile.mkdtemp(dir=scratch())
  fresh = tf_mp.Trainer(tf_mp.build_model('cpu:0', SMALL))
  checkpoints = tf_mp.TrainingCheckpoints(directory, fresh)
  checkpoints.save()
  fresh.model.head.bias.assign(tf.fill([4], NAN))
  fresh.step.assign(1)
  checkpoints.save()


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
     "device_time_report: 'x' is a NoneType, not an array"),
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
    ('keras_call_none', lambda: keras_model()(None),
     'call: inputs must be a tensor or an array, got None'),
    ('keras_call_text', lambda: keras_model()('abc'),
     "call: inputs must be a tensor or an array, got 'abc'"),
    ('keras_call_width', lambda: keras_model()(X[:, :10]),
     'call: inputs have shape [8, 10]; the model expects [batch, 16]'),
    ('keras_call_ragged_list', lambda: keras_model()([[1.0, 2.0], [3.0]]),
     "call: 'inputs' must be an array of numbers"),
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
    # Found by the third adversarial run: the user's own models, numbers that
    # round away in float32, values beyond int64 or float32.
    ('own_model_float16', lambda: tf_mp.Trainer(_own(dtype=tf.float16)),
     "variable 'w' has dtype float16; tf_mp.Adam (TF1's AdamOptimizer) updates float32"),
    ('own_model_input_spec', lambda: tf_mp.Trainer(_own(input_spec='x')),
     "_OwnModel.input_spec must be a tf.TensorSpec or None, got 'x'"),
    ('own_model_output_device', lambda: tf_mp.Trainer(_own(output_device='cpu:99')),
     "device 'cpu:99' does not exist"),
    ('own_model_check_data', lambda: _fit_own(_own(check_data=lambda x, y, source: None)),
     '_OwnModel.check_data returned None; expected (features, labels)'),
    ('own_model_logits_width', lambda: _fit_own(num_classes=7),
     '_OwnModel gives logits of width 4 but declares num_classes 7'),
    ('own_model_fails_tracing', lambda: _fit_own(_own(
        call=lambda self, x: _raise(RuntimeError('model bug')))),
     'failed while tracing its step (RuntimeError: model bug)'),
    ('own_model_float64_weights_tracing', lambda: _fit_own(_own(
        call=lambda self, x: x @ tf.cast(self.w, tf.float64))),
     'failed while tracing its step'),
    ('loss_fn_vector', lambda: _fit_own(loss_fn=lambda logits, labels: logits[:, 0]),
     'loss_fn returned'),
    ('loss_fn_constant', lambda: _fit_own(loss_fn=lambda logits, labels: tf.constant(1.0)),
     'the loss of _OwnModel does not depend on any of its trainable variables'),
    ('fit_inside_function', _fit_in_function, 'Trainer.fit was called inside a tf.function'),
    ('fit_steps_beyond_int64', lambda: _fit_own(steps=2**63), 'beyond int64'),
    ('fit_dataset_as_x', lambda: tf_mp.Trainer(model()).fit(
        tf.data.Dataset.from_tensor_slices(X), Y, steps=1, batch_size=4), 'not an array'),
    ('adam_learning_rate_rounds_to_zero', lambda: tf_mp.Adam(1e-50),
     'Adam learning_rate 1e-50 is 0.0 in float32'),
    ('adam_beta2_rounds_to_one', lambda: tf_mp.Adam(beta2=0.99999999999),
     'Adam beta2 0.99999999999 is 1.0 in float32'),
    ('adam_learning_rate_overflows', lambda: tf_mp.Adam(1e39),
     'Adam learning_rate 1e+39 is inf in float32'),
    ('batch_indices_uint64', lambda: tf_mp.batch_indices(np.uint64(2**63), 4, 10),
     'beyond int64'),
    ('synthetic_data_huge', lambda: tf_mp.synthetic_data(0, num_examples=10**12),
     'synthetic_data of 1,000,000,000,000 x 128 values needs about'),
    ('model_seed_beyond_int64', lambda: tf_mp.ModelConfig(seed=2**64),
     "ModelConfig.seed must be an integer in int64's range"),
    ('dense_name_not_identifier', lambda: tf_mp.Dense(4, 3, name='a/b'),
     "Dense name must be a Python identifier such as \"head\" (or None), got 'a/b'"),
    ('x_beyond_float32', lambda: tf_mp.check_arrays(np.full((2, 16), 1e300), [0, 1], 't', 16),
     "t: 'x' contains a non-finite value (1e+300 beyond float32's range)"),
    ('labels_beyond_int32', lambda: tf_mp.check_arrays(X, np.full(8, 2**33), 't', 16, 2**40),
     't: label 8589934592 at row 0 is outside [0, 2147483648)'),
    ('loss_scalar_logits', lambda: tf_mp.sparse_softmax_loss(tf.constant(1.0), tf.constant(0)),
     'sparse_softmax_loss: logits have shape []'),
    ('lm_evaluate_batch_zero', lambda: lm.LMTrainer(tiny_lm()).evaluate(
        ids(0), ids(0), batch_size=0), 'evaluate: batch_size must be a positive integer, got 0'),
    ('tf1_save_existing_prefix', _save_tf1_twice,
     'already exists; choose a new prefix (nothing is overwritten)'),
    ('tf1_save_into_training_checkpoints', _save_tf1_into_training_checkpoints,
     'holds tf_mp training checkpoints (ckpt-N), whose state file a TF1 checkpoint'),
    ('tf1_save_non_finite', lambda: tf_mp.compat.v1.save_tf1_checkpoint(
        _diverged_model(), os.path.join(scratch(), 'nan', 'model')),
     'head/bias has 4 non-finite values (e.g. nan); expected finite numbers. Nothing was written'),
    ('export_non_finite', lambda: tf_mp.export_saved_model(
        _diverged_model(), os.path.join(scratch(), 'nan_export')),
     "variable 'head/bias:0' holds non-finite values"),
    ('restore_tf1_as_training_checkpoint', _restore_tf1_as_training_checkpoint,
     'ckpt-7: a TF1 (name-based) checkpoint, for tf_mp.compat.v1.load_tf1_checkpoint'),
    ('save_into_replaced_directory', _save_into_replaced_directory,
     'cannot save checkpoint ckpt-0'),
    ('lm_checkpoints_other_vocabulary', _lm_checkpoints_other_vocabulary,
     'holds a run with vocab'),
    ('keras_fit_batch_size_zero', lambda: _fit_keras(batch_size=0),
     'fit: batch_size must be a positive integer, got 0'),
    ('keras_predict_batch_size_negative', lambda: keras_model().predict(X, batch_size=-1),
     'predict: batch_size must be a positive integer, got -1'),
    ('keras_fit_fractional_labels', lambda: _fit_keras(y=Y + 0.5),
     'fit: label 0.5 is not a class id'),
    ('keras_fit_dataset_label_beyond', lambda: _fit_keras(
        x=tf.data.Dataset.from_tensor_slices((X, np.full(8, 9))).batch(4), y=None,
        batch_size=None), 'fit: label 9 is outside [0, 4) (found in a batch while running'),
    ('keras_integer_outputs', lambda: _fit_keras(IntegerOutputs()),
     'the loss does not depend on any trainable weight of the model'),
    ('tf_config_nested_too_deeply', lambda: tf_mp.distribute.parse_tf_config(
        '[' * 100000 + ']' * 100000), 'is nested too deeply to parse'),
    ('layout_scope_inside_another', _nested_layouts,
     "was entered inside another strategy's scope"),
    ('best_split_table_too_big', lambda: tf_mp.pipeline.best_split([1.0] * 10**4, 10**4),
     '10000 parts of 10,000 layers make a table of 100,000,000 entries'),
    ('pipeline_stages_generator', lambda: tf_mp.pipeline.Pipeline(
        s for s in [tf_mp.pipeline.pipeline_stage(1, 'cpu:0')]),
     'stages must be a list of stage modules or builders, got <generator'),
    ('lm_generate_negative_seed', lambda: lm.generate(
        tiny_lm(), lm.CharVocab.from_text('abcdefghijklmnopqrst'), 'a', 2, seed=-1),
     'seed must be an integer >= 0, got -1'),
    ('lm_decode_negative', lambda: lm.CharVocab.from_text('abc').decode([-1]),
     'ids contain -1; expected character ids in [0, 3)'),
    ('lm_entropy_empty', lambda: lm.unigram_entropy(np.zeros(0, np.int32)),
     'ids must be a non-empty array of character ids >= 0'),
    ('lm_assign_non_finite', lambda: tiny_lm().assign_full_weights(
        {k: np.full_like(v, NAN) for k, v in tiny_lm().full_weights().items()}),
     'holds non-finite values; expected finite numbers. Nothing was assigned'),
    ('lm_default_tensor_parallel_string', lambda: lm.default_tensor_parallel(
        lm.LMConfig(), 'cpu:0'), "preferred must be a sequence of device counts, got 'cpu:0'"),
    ('trainer_inside_function', _trainer_in_function,
     'Trainer(...) was called inside a tf.function'),
    ('export_model_other_width', _export_other_width,
     'cannot export _OwnModel: calling it on features float32 [None, 3] failed'),
    ('device_time_logdir_file', lambda: tf_mp.reports.device_time_report(
        pipeline(), np.zeros((4, 128), np.float32), np.zeros(4, np.int64),
        logdir=_file_in(scratch())), 'profiler logdir'),
    ('keras_save_no_overwrite', lambda: keras_model().save(_keras_file(), overwrite=False),
     'exists and overwrite=False; nothing was written'),
    ('save_diverged', _save_diverged,
     "(variable 'head/bias:0' holds non-finite values, as after a diverged step); "
     'the previous checkpoint'),
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

  def test_unnamed_variables_get_their_own_adam_slots(self):
    # Eager variables are not renamed: both are 'Variable', and Adam's slots,
    # keyed by name, were shared (a silently wrong update).
    first, second = tf.Variable([1.0, -2.0]), tf.Variable([1.0, -2.0])
    optimizer = tf_mp.Adam(0.1)
    optimizer.build([first, second])
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), first),
                               (tf.constant([-3.0, 0.5]), second)])
    # Adam's first step moves each variable by lr against its gradient's sign.
    self.assertAllClose(first, [0.9, -2.1])
    self.assertAllClose(second, [1.1, -2.1])
    self.assertEqual(sorted(optimizer.slots()), ['Variable/Adam', 'Variable/Adam_1',
                                                 'Variable_1/Adam', 'Variable_1/Adam_1',
                                                 'beta1_power', 'beta2_power'])

  def test_small_integer_labels_give_the_int32_loss(self):
    logits = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    self.assertAllClose(tf_mp.sparse_softmax_loss(logits, labels.astype(np.int8)),
                        tf_mp.sparse_softmax_loss(logits, labels.astype(np.int32)))

  def _save_fails_half_way(self, name, error, raised, message=None):
    """Saves a model to `name`, then again with the zip writer raising `error`.

    Asserts that the second save raises `raised` (matching `message` if given),
    and that the first file is intact, with no staging file beside it.
    """
    path = os.path.join(scratch(), name)
    keras_model().save(path)
    with open(path, 'rb') as f:
      before = f.read()
    original = zipfile.ZipFile.writestr

    def failing(*args, **kwargs):
      raise error

    zipfile.ZipFile.writestr = failing
    try:
      with self.assertRaisesRegex(raised, message or ''):
        keras_model().save(path)
    finally:
      zipfile.ZipFile.writestr = original
    with open(path, 'rb') as f:
      self.assertEqual(f.read(), before)
    self.assertEqual(sorted(os.listdir(os.path.dirname(path))).count(name), 1)
    stem = os.path.splitext(name)[0]
    self.assertFalse([n for n in os.listdir(scratch()) if n.startswith(f'.{stem}.')])

  def test_an_interrupted_keras_save_keeps_the_previous_file(self):
    self._save_fails_half_way('kept.keras',
                              KeyboardInterrupt('Ctrl-C half way through the save'),
                              KeyboardInterrupt)

  def test_a_keras_save_on_a_full_disk_is_one_line_and_keeps_the_previous_file(self):
    self._save_fails_half_way(
        'full.keras', OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), tf_mp.TfMpError,
        r"^save: could not write '.*full.keras' \(No space left on device\); any previous "
        'file there is unchanged$')

  def test_step_logger_takes_numpy_integers(self):
    self.assertEqual(tf_mp.keras.StepLogger(np.int64(5)).every, 5)

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

  # TF_MP_CPU_THREADS -> the runtime's spinning off, intra-op, inter-op threads, CPUs.
  EXPECTED = {'exact': 'True 0 0 3', 'tensorflow': 'False 0 0 3', 'matched': 'True 1 3 3',
              '': 'True 0 0 3'}

  def test_each_mode_reaches_the_runtime(self):
    # A fresh process per mode: the pools are fixed when the runtime starts.
    script = ('import tensorflow as tf, tf_mp; tf_mp.ensure_logical_cpus(3); '
              'tf.constant(1.0); from tensorflow.python.eager import context; '
              'c = context.context().config; print(c.experimental.disable_thread_spinning, '
              'c.intra_op_parallelism_threads, c.inter_op_parallelism_threads, '
              'len(tf.config.list_logical_devices("CPU")))')
    for mode, line in self.EXPECTED.items():
      run = run_python(['-c', script], env={'TF_MP_CPU_THREADS': mode}, timeout=120)
      self.assertEqual(run.returncode, 0, run.stderr[-2000:])
      self.assertEqual(run.stdout.strip(), line, f'TF_MP_CPU_THREADS={mode!r}')

  def test_the_tf1_program_gets_the_same_pools_as_each_mode(self):
    # benchlib.TF1_POOLS gives tools/reference/tf1_program.py the port's pools
    # (oracle_report.py --tf1_pools same, bench_tutorial.py): the settings above.
    spec = importlib.util.spec_from_file_location(
        'benchlib', os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 'tools', 'benchlib.py'))
    benchlib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchlib)
    for mode, line in self.EXPECTED.items():
      pools = list(benchlib.TF1_POOLS[mode or 'exact'])
      value = lambda flag: pools[pools.index(flag) + 1] if flag in pools else '0'  # pylint: disable=cell-var-from-loop
      self.assertEqual(f"{'--no_spinning' in pools} {value('--intra_threads')} "
                       f"{value('--inter_threads')} 3", line, f'TF_MP_CPU_THREADS={mode!r}')

  def test_unknown_thread_mode_is_one_line(self):
    from tf_mp import devices  # pylint: disable=g-import-not-at-top
    previous = os.environ.get(devices.THREADS_ENV)
    os.environ[devices.THREADS_ENV] = 'fastest'
    try:
      with self.assertRaisesRegex(tf_mp.TfMpError, "TF_MP_CPU_THREADS='fastest'; expected "
                                  'one of exact, tensorflow, matched'):
        devices.match_threads_to_devices(3)
    finally:
      if previous is None:
        del os.environ[devices.THREADS_ENV]
      else:
        os.environ[devices.THREADS_ENV] = previous
