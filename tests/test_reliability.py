"""Bad input and faults end in one TfMpError line and lose nothing (issue 11, library side).

Each case asserts the exact one-line outcome and that nothing was lost: the
checkpoint files are byte for byte what they were, the step and the weights
are restored, no temporary file is left behind.
"""

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp import lm
from tf_mp.adam import variable_name
from tf_mp.checkpoints import SETTINGS_FILE
from tf_mp.distribute.cluster import parse_tf_config
from tf_mp.files import check_writable_dir, read_json, write_text_atomic
from tf_mp.memory import check_batch_fits

THREE = ['cpu:0', 'cpu:1', 'cpu:2']
# A small model keeps each checkpoint ~30 kB, so the tests stay fast.
SMALL = tf_mp.ModelConfig(input_units=16, num_classes=4,
                          sub_models=(tf_mp.SubModelConfig(8, 4),) * 3)


def new_trainer(seed: int = 0, config=SMALL):
  model = tf_mp.build_model(THREE, dataclasses.replace(config, seed=seed))
  return tf_mp.Trainer(model)


def small_data(seed: int = 0):
  return tf_mp.synthetic_data(seed, num_examples=64, input_units=16, num_classes=4)


def advance(trainer, step: int) -> None:
  """Stands in for training up to `step` (no tracing, so the tests stay fast):
  the step, and weights and Adam slots that differ at every step."""
  rng = np.random.default_rng(step)
  variables = list(trainer.model.trainable_variables)
  variables += list(trainer.optimizer.slots().values())
  for var in variables:
    var.assign(rng.standard_normal(var.shape).astype(var.dtype.as_numpy_dtype))
  trainer.step.assign(step)


def state(trainer) -> dict:
  values = {v.name: v.numpy() for v in trainer.model.trainable_variables}
  values.update({n: v.numpy() for n, v in trainer.optimizer.slots().items()})
  values['step'] = trainer.step.numpy()
  return values


def files(directory: str) -> dict:
  """Name -> bytes of the checkpoint files (`ckpt-N.*`) in `directory`."""
  out = {}
  for name in sorted(os.listdir(directory)):
    if name.startswith('ckpt-') and os.path.isfile(os.path.join(directory, name)):
      with open(os.path.join(directory, name), 'rb') as f:
        out[name] = f.read()
  return out


def one_line(test, error) -> str:
  message = str(error)
  test.assertNotIn('\n', message)
  test.assertIsInstance(error, tf_mp.TfMpError)
  return message


@contextlib.contextmanager
def read_only_dir(parent: str):
  """A directory nobody can write to: chmod 555, or a read-only tmpfs for root."""
  path = os.path.join(parent, 'read_only')
  os.makedirs(path)
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield path
    finally:
      os.chmod(path, 0o755)
    return
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', path],
                    capture_output=True, check=False).returncode:
    raise unittest.SkipTest('root cannot be denied writes without a read-only mount')
  try:
    yield path
  finally:
    subprocess.run(['umount', path], check=False)


class CheckpointDirectoryTest(parameterized.TestCase, tf.test.TestCase):
  """The state file, leftovers of killed saves, writability, full disks."""

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(prefix='reliability_')
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def train_with_checkpoints(self, steps=20, every=10, settings=None):
    """A run that saved ckpt-10, ckpt-20; returns its state at the end."""
    trainer = new_trainer()
    saver = tf_mp.TrainingCheckpoints(self.dir, trainer, settings=settings)
    for step in range(every, steps + 1, every):
      advance(trainer, step)
      saver.save()
    return state(trainer)

  def resume(self, settings=None, seed=1):
    """A new process's resume (another initial seed: the checkpoint must win)."""
    messages = []
    trainer = new_trainer(seed)
    tf_mp.resume_training(self.dir, trainer, log=messages.append,
                          settings=settings)
    return trainer, messages

  def replace_with_fifo(self, name):
    """Replaces the checkpoint directory's file `name` with a fifo; returns its path."""
    path = os.path.join(self.dir, name)
    os.remove(path)
    os.mkfifo(path)
    return path

  def assert_state_equal(self, want, trainer):
    got = state(trainer)
    for name, value in want.items():
      self.assertAllEqual(value, got[name], msg=name)

  @parameterized.named_parameters(
      ('garbage', b'\x8f\x00garbage{{{', 'does not parse'),
      ('empty', b'', 'is empty'),
      ('blank', b'  \n', 'is empty'),
      ('no_latest', b'all_model_checkpoint_paths: "ckpt-10"\n', 'names no checkpoint'),
      ('unknown_field', b'model_checkpoint_path: "ckpt-20"\nbogus: 1\n',
       'does not parse'),
  )
  def test_damaged_state_file_is_recovered_from_the_checkpoints(self, content, how):
    at_20 = self.train_with_checkpoints()
    state_file = os.path.join(self.dir, 'checkpoint')
    with open(state_file, 'wb') as f:
      f.write(content)
    before = files(self.dir)
    trainer, messages = self.resume()
    self.assertEqual(messages, [
        f'checkpoint state file {state_file!r} {how}' + messages[0].split(how)[1],
        f'Resumed from {self.dir}/ckpt-20 at step 20'])
    self.assertTrue(messages[0].endswith(
        '; recovered the list from the checkpoints present (ckpt-10, ckpt-20); '
        f'the damaged file is kept as {state_file}.damaged'), messages[0])
    self.assert_state_equal(at_20, trainer)
    self.assertEqual(files(self.dir), before)  # nothing overwritten
    with open(state_file + '.damaged', 'rb') as f:
      self.assertEqual(f.read(), content)
    # The repaired list is TensorFlow's own format: training goes on and saves.
    self.assertEqual(tf.train.latest_checkpoint(self.dir),
                     os.path.join(self.dir, 'ckpt-20'))
    _, messages = self.resume()
    self.assertEqual(messages, [f'Resumed from {self.dir}/ckpt-20 at step 20'])

  def test_state_file_that_is_a_fifo_is_recovered_not_waited_on(self):
    # Reading it waited for a writer forever (third adversarial run).
    at_20 = self.train_with_checkpoints()
    state_file = self.replace_with_fifo('checkpoint')
    trainer, messages = self.resume()
    self.assertEqual(messages, [
        f'checkpoint state file {state_file!r} cannot be read (not a regular file but a '
        'device, pipe or socket); recovered the list from the checkpoints present '
        f'(ckpt-10, ckpt-20); the damaged file is kept as {state_file}.damaged',
        f'Resumed from {self.dir}/ckpt-20 at step 20'])
    self.assert_state_equal(at_20, trainer)

  def test_missing_state_file_is_recovered_not_restarted(self):
    at_20 = self.train_with_checkpoints()
    os.remove(os.path.join(self.dir, 'checkpoint'))
    trainer, messages = self.resume()
    self.assertEqual(messages[0], f'{self.dir!r} has checkpoints (ckpt-10, ckpt-20) '
                     'but no state file; recovered the list from the checkpoints '
                     'present (ckpt-10, ckpt-20)')
    self.assert_state_equal(at_20, trainer)

  def test_damaged_state_and_damaged_newest_falls_back(self):
    self.train_with_checkpoints()
    with open(os.path.join(self.dir, 'checkpoint'), 'wb') as f:
      f.write(b'\x00\x01')
    with open(os.path.join(self.dir, 'ckpt-20.index'), 'wb') as f:
      f.write(b'not an index')
    trainer, messages = self.resume()
    self.assertLen(messages, 3)
    self.assertStartsWith(messages[1], f'Checkpoint {self.dir}/ckpt-20 is unreadable')
    self.assertEqual(messages[2], f'Resumed from {self.dir}/ckpt-10 at step 10')
    self.assertEqual(int(trainer.step.numpy()), 10)

  def test_newest_index_that_is_a_fifo_falls_back_to_the_previous(self):
    # TensorFlow's reader waited on it forever (third adversarial run).
    self.train_with_checkpoints()
    self.replace_with_fifo('ckpt-20.index')
    trainer, messages = self.resume()
    self.assertEqual(messages, [
        f'Checkpoint {self.dir}/ckpt-20 is unreadable (ckpt-20.index is not a regular file '
        'but a directory, device, pipe or socket); trying the previous one',
        f'Resumed from {self.dir}/ckpt-10 at step 10'])
    self.assertEqual(int(trainer.step.numpy()), 10)

  def test_damaged_state_and_no_readable_checkpoint_is_refused(self):
    self.train_with_checkpoints()
    with open(os.path.join(self.dir, 'checkpoint'), 'wb') as f:
      f.write(b'garbage')
    for n in (10, 20):
      with open(os.path.join(self.dir, f'ckpt-{n}.index'), 'wb') as f:
        f.write(b'not an index')
    before = files(self.dir)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      self.resume()
    self.assertRegex(one_line(self, caught.exception),
                     r"^no checkpoint in '.*' can be read: ckpt-20: .*; ckpt-10: ")
    self.assertEqual(files(self.dir), before)

  def test_damaged_state_without_checkpoints_starts_fresh_with_a_line(self):
    with open(os.path.join(self.dir, 'checkpoint'), 'wb') as f:
      f.write(b'garbage')
    trainer, messages = self.resume()
    self.assertEqual(messages, [
        f"checkpoint state file '{self.dir}/checkpoint' does not parse "
        + messages[0].split('does not parse ')[1].split(';')[0]
        + '; there are no ckpt-N files here, so training starts from step 0; '
        f'the damaged file is kept as {self.dir}/checkpoint.damaged'])
    self.assertEqual(int(trainer.step.numpy()), 0)

  def test_leftovers_of_a_killed_save_are_removed_on_the_next_start(self):
    at_20 = self.train_with_checkpoints()
    # What kill -9 during CheckpointManager.save left in an experiment (TF
    # 2.21): the shard folder with its tempstate file, a data file moved out
    # before the index was written, and the state file's temporary copy.
    os.makedirs(os.path.join(self.dir, 'ckpt-30_temp'))
    # And tf_mp's own: an atomic write's and a writability probe's temporaries.
    for name in ('ckpt-30_temp/part-00000-of-00001.data-00000-of-00001.tempstate123',
                 'ckpt-40.data-00000-of-00001', 'checkpoint.tmp0123abcd',
                 '.run_settings.json.k2j4_x.tmp', '.tf_mp_write_test_abc'):
      with open(os.path.join(self.dir, name), 'wb') as f:
        f.write(b'\x00' * 100)
    before = {n: b for n, b in files(self.dir).items() if not n.startswith('ckpt-40')}
    trainer, messages = self.resume()
    self.assertEqual(messages[0], f'Removed what an interrupted save left in '
                     f'{self.dir}: .run_settings.json.k2j4_x.tmp, '
                     '.tf_mp_write_test_abc, checkpoint.tmp0123abcd, ckpt-30_temp, '
                     'ckpt-40.data-00000-of-00001')
    self.assertEqual(sorted(os.listdir(self.dir)), sorted(
        list(before) + ['checkpoint']))
    self.assertEqual(files(self.dir), before)
    self.assert_state_equal(at_20, trainer)

  def test_unwritable_directory_is_refused_at_construction(self):
    with read_only_dir(self.dir) as path:
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.TrainingCheckpoints(path, new_trainer())
      self.assertRegex(one_line(self, caught.exception),
                       rf"^checkpoint directory '{path}' is not writable \(.*\); "
                       'expected a directory this user can write$')
      with self.assertRaisesRegex(tf_mp.TfMpError, 'cannot be created'):
        tf_mp.TrainingCheckpoints(os.path.join(path, 'sub'), new_trainer())

  @parameterized.named_parameters(
      ('full_disk', lambda: tf.errors.ResourceExhaustedError(
          None, None, 'ckpt-30_temp/part-00000; No space left on device'),
       'ResourceExhaustedError: ckpt-30_temp/part-00000; No space left on device'),
      ('full_disk_os', lambda: OSError(errno.ENOSPC, 'No space left on device'),
       'OSError: [Errno 28] No space left on device'),
      ('permission', lambda: tf.errors.PermissionDeniedError(
          None, None, 'ckpt-30_temp; Permission denied'),
       'PermissionDeniedError: ckpt-30_temp; Permission denied'),
  )
  def test_failed_save_is_one_line_and_the_previous_checkpoint_is_intact(
      self, make_error, reason):
    trainer = new_trainer()
    saver = tf_mp.TrainingCheckpoints(self.dir, trainer)
    for step in (10, 20):
      advance(trainer, step)
      saver.save()
    at_20 = state(trainer)
    before = files(self.dir)

    def failing_save(checkpoint_number):
      # What a save that ran out of space leaves before it fails.
      os.makedirs(os.path.join(self.dir, f'ckpt-{checkpoint_number}_temp'))
      with open(os.path.join(self.dir, f'ckpt-{checkpoint_number}.data-00000-of-00001'),
                'wb') as f:
        f.write(b'\x00' * 10)
      raise make_error()

    saver.manager.save = failing_save
    advance(trainer, 30)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      saver.save()
    self.assertEqual(one_line(self, caught.exception),
                     f'cannot save checkpoint ckpt-30 in {self.dir!r} ({reason}); '
                     f'the previous checkpoint {self.dir}/ckpt-20 is intact')
    self.assertEqual(files(self.dir), before)  # the partial ckpt-30 is gone
    self.assertNotIn('ckpt-30_temp', os.listdir(self.dir))
    resumed, _ = self.resume()
    self.assert_state_equal(at_20, resumed)

  def test_full_disk_for_real(self):
    if os.geteuid() != 0:
      self.skipTest('mounting a tiny tmpfs needs root')
    path = os.path.join(self.dir, 'tiny')
    os.makedirs(path)
    # Room for the settings, one checkpoint (~40 kB with Adam) and little more.
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=100k', 'tmpfs', path],
                      capture_output=True, check=False).returncode:
      self.skipTest('cannot mount a tmpfs here')
    self.addCleanup(subprocess.run, ['umount', path], check=False)
    big = tf_mp.ModelConfig(input_units=16, num_classes=4,
                            sub_models=(tf_mp.SubModelConfig(96, 4),) * 3)
    trainer = new_trainer(config=big)
    saver = tf_mp.TrainingCheckpoints(path, trainer)
    advance(trainer, 1)
    saver.save()
    at_1 = state(trainer)
    before = files(path)
    advance(trainer, 2)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      saver.save()
    self.assertRegex(one_line(self, caught.exception),
                     rf"^cannot save checkpoint ckpt-2 in '{path}' \("
                     rf'ResourceExhaustedError: {path}/ckpt-2_temp/part-00000-of-'
                     r'00001\.data-00000-of-00001\.tempstate\d+; No space left on '
                     rf'device\); the previous checkpoint {path}/ckpt-1 is intact$')
    self.assertEqual(sorted(os.listdir(path)), sorted(list(before) + ['checkpoint']))
    self.assertEqual(files(path), before)
    resumed = new_trainer(1, config=big)
    tf_mp.resume_training(path, resumed, log=lambda line: None)
    self.assert_state_equal(at_1, resumed)


class RunSettingsTest(tf.test.TestCase):
  """Resuming with other settings is refused, naming each difference."""

  SETTINGS = {'seed': 0, 'batch_size': 8, 'data': 'synthetic:abc',
              'model': {'seed': 0, 'input_units': 16}}

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(prefix='settings_')
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def save(self, settings):
    trainer = new_trainer()
    saver = tf_mp.TrainingCheckpoints(self.dir, trainer, settings=settings)
    advance(trainer, 10)
    saver.save()
    return state(trainer)

  def test_settings_are_recorded_atomically_at_the_first_save(self):
    self.save(self.SETTINGS)
    self.assertEqual(read_json(os.path.join(self.dir, SETTINGS_FILE)), self.SETTINGS)
    self.assertEqual([n for n in os.listdir(self.dir) if 'tmp' in n], [])

  def test_same_settings_resume(self):
    at_10 = self.save(self.SETTINGS)
    trainer = new_trainer(1)
    tf_mp.resume_training(self.dir, trainer, log=lambda line: None,
                          settings=dict(self.SETTINGS))
    self.assertAllEqual(state(trainer)['step'], at_10['step'])

  def test_other_settings_are_refused_naming_each_difference(self):
    self.save(self.SETTINGS)
    before = files(self.dir)
    other = dict(self.SETTINGS, seed=1, batch_size=16, devices='cpu:0',
                 model={'seed': 1, 'input_units': 16})
    trainer = new_trainer(1)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      tf_mp.resume_training(self.dir, trainer, settings=other)
    self.assertEqual(one_line(self, caught.exception),
                     f'checkpoint directory {self.dir!r} holds a run with other '
                     'settings: batch_size: 8 in the checkpoints, 16 now; devices: '
                     '(none) in the checkpoints, "cpu:0" now; model.seed: 0 in the '
                     'checkpoints, 1 now; seed: 0 in the checkpoints, 1 now; resume '
                     'with the same settings or use another directory')
    self.assertEqual(int(trainer.step.numpy()), 0)  # refused before restoring
    self.assertEqual(files(self.dir), before)

  def test_checkpoints_without_settings_file_are_accepted_with_a_line(self):
    self.save(None)
    messages = []
    trainer = new_trainer(1)
    saver = tf_mp.resume_training(self.dir, trainer, log=messages.append,
                                  settings=self.SETTINGS)
    self.assertEqual(messages, [
        f'{self.dir} has checkpoints but no {SETTINGS_FILE} (from a run before '
        'settings were recorded); resuming without comparing settings, which '
        'are recorded from the next save',
        f'Resumed from {self.dir}/ckpt-10 at step 10'])
    advance(trainer, 11)
    saver.save()
    self.assertEqual(read_json(os.path.join(self.dir, SETTINGS_FILE)), self.SETTINGS)

  def test_settings_file_without_checkpoints_does_not_block(self):
    with open(os.path.join(self.dir, SETTINGS_FILE), 'w') as f:
      json.dump({'seed': 5}, f)
    tf_mp.resume_training(self.dir, new_trainer(), settings=self.SETTINGS)

  def test_refusal_comes_before_any_change_to_the_directory(self):
    self.save(self.SETTINGS)
    with open(os.path.join(self.dir, 'checkpoint'), 'wb') as f:
      f.write(b'garbage')
    os.makedirs(os.path.join(self.dir, 'ckpt-30_temp'))
    listing = sorted(os.listdir(self.dir))
    with self.assertRaisesRegex(tf_mp.TfMpError, 'holds a run with other settings'):
      tf_mp.resume_training(self.dir, new_trainer(), settings={'seed': 9})
    self.assertEqual(sorted(os.listdir(self.dir)), listing)

  def test_settings_file_that_is_a_fifo_or_a_directory_is_one_line(self):
    # A fifo blocked the program forever; a link to /dev/zero filled the memory.
    self.save(self.SETTINGS)
    path = os.path.join(self.dir, SETTINGS_FILE)
    for make, reason in ((os.mkfifo, 'not a regular file but a device, pipe or socket'),
                         (lambda p: os.symlink('/dev/zero', p),
                          'not a regular file but a device, pipe or socket'),
                         (os.mkdir, 'Is a directory')):
      if os.path.isdir(path):
        os.rmdir(path)
      else:
        os.remove(path)
      make(path)
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.resume_training(self.dir, new_trainer(), settings=self.SETTINGS)
      self.assertEqual(one_line(self, caught.exception),
                       f'run settings file {path!r} cannot be read ({reason})')

  def test_damaged_settings_file_is_one_line(self):
    self.save(self.SETTINGS)
    # Truncated; nested too deep for the parser (a RecursionError traceback before).
    for text in ('{"seed": ', '[' * 100_000 + ']' * 100_000):
      with open(os.path.join(self.dir, SETTINGS_FILE), 'w') as f:
        f.write(text)
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.resume_training(self.dir, new_trainer(), settings=self.SETTINGS)
      self.assertRegex(one_line(self, caught.exception),
                       r"^run settings file '.*run_settings.json' is damaged \(not "
                       r'valid JSON: .*\); expected the JSON tf_mp wrote there$')

  def test_data_identity_tells_data_sets_apart(self):
    x, y = small_data()
    same = tf_mp.data_identity(x.copy(), y.copy())
    self.assertEqual(tf_mp.data_identity(x, y), same)
    y2 = y.copy()
    y2[-1] = (y2[-1] + 1) % 4
    self.assertNotEqual(tf_mp.data_identity(x, y2), same)
    self.assertNotEqual(tf_mp.data_identity(x[:32], y[:32]), same)

  def test_settings_that_are_not_json_are_refused(self):
    with self.assertRaises(tf_mp.TfMpError) as caught:
      tf_mp.TrainingCheckpoints(self.dir, new_trainer(), settings={'x': object()})
    self.assertStartsWith(one_line(self, caught.exception),
                          'settings must be a dict of JSON values')


class LMRunFileTest(tf.test.TestCase):
  """tiny_lm.json: written atomically; a damaged one is one line; the state file recovered."""

  def setUp(self):
    super().setUp()
    self.corpus = lm.prepare_corpus(lm.builtin_corpus()[:2000], 12)
    config = lm.LMConfig(vocab_size=self.corpus.vocab.size, context=12, d_model=12,
                         num_heads=3, num_blocks=1, mlp_units=12)
    self.logdir = tempfile.mkdtemp(prefix='lm_')
    self.addCleanup(shutil.rmtree, self.logdir, ignore_errors=True)
    self.trainer = lm.LMTrainer(lm.build_lm(config, THREE))

  def test_damaged_run_file_is_one_line_and_save_rewrites_it_whole(self):
    logdir, trainer, corpus = self.logdir, self.trainer, self.corpus
    lm.LMCheckpoints(logdir, trainer, corpus.vocab).save()
    run_file = os.path.join(logdir, lm.train.RUN_FILE)
    saved = read_json(run_file)
    self.assertEqual(saved['vocab'], corpus.vocab.chars)
    self.assertEqual([n for n in os.listdir(logdir) if n.endswith('.tmp')], [])
    for content, how in ((b'', 'is empty'), (b'{"config": {"vocab', 'is damaged')):
      with open(run_file, 'wb') as f:
        f.write(content)
      with self.assertRaises(tf_mp.TfMpError) as caught:
        lm.LMCheckpoints(logdir, trainer, corpus.vocab).restore_or_initialize()
      self.assertStartsWith(one_line(self, caught.exception),
                            f'tiny LM run file {run_file!r} {how}')

  def test_damaged_state_file_is_recovered_with_a_line(self):
    # tiny_lm resumed right, but said nothing of the damage (the tutorial does).
    advance(self.trainer, 6)
    lm.LMCheckpoints(self.logdir, self.trainer, self.corpus.vocab).save()
    at_6 = state(self.trainer)
    state_file = os.path.join(self.logdir, 'checkpoint')
    with open(state_file, 'wb') as f:
      f.write(b'\x8f\x00garbage{{{')
    advance(self.trainer, 0)
    messages = []
    step = lm.LMCheckpoints(self.logdir, self.trainer, self.corpus.vocab,
                            log=messages.append).restore_or_initialize()
    self.assertEqual(step, 6)
    self.assertLen(messages, 1)
    self.assertStartsWith(messages[0], f'checkpoint state file {state_file!r} does not parse')
    self.assertEndsWith(messages[0], 'recovered the list from the checkpoints present '
                        f'(ckpt-6); the damaged file is kept as {state_file}.damaged')
    for name, value in at_6.items():
      self.assertAllEqual(value, state(self.trainer)[name], msg=name)

  def test_missing_run_file_resumes_with_a_line(self):
    # The tutorial says so when run_settings.json is missing; tiny_lm said nothing.
    advance(self.trainer, 4)
    lm.LMCheckpoints(self.logdir, self.trainer, self.corpus.vocab).save()
    at_4 = state(self.trainer)
    os.remove(os.path.join(self.logdir, lm.train.RUN_FILE))
    advance(self.trainer, 0)
    messages = []
    step = lm.LMCheckpoints(self.logdir, self.trainer, self.corpus.vocab,
                            log=messages.append).restore_or_initialize()
    self.assertEqual(step, 4)
    self.assertEqual(messages, [f'{self.logdir} has checkpoints but no tiny_lm.json; '
                                'resuming without comparing the config, T and '
                                'vocabulary, which are recorded from the next save'])
    for name, value in at_4.items():
      self.assertAllEqual(value, state(self.trainer)[name], msg=name)


class ExportTest(parameterized.TestCase, tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp(prefix='export_')
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  @parameterized.named_parameters(
      ('empty_string', lambda d: '', "export directory '' is not a path"),
      ('none', lambda d: None, 'export directory None is not a path'),
      ('a_file', lambda d: os.path.join(d, 'file'), 'is a file; expected a new path'),
      ('not_empty', lambda d: d, 'already exists and is not empty'),
      ('parent_is_a_file', lambda d: os.path.join(d, 'file', 'model'),
       'cannot be written: directory .* exists and is not a directory'),
      # Both were called "a file" before.
      ('dangling_link', lambda d: os.path.join(d, 'dangling'),
       r"cannot be created: '.*/dangling' is a symbolic link to '.*/gone', which does "
       r'not exist; expected a new path or an empty directory \(create the target'),
      ('link_loop', lambda d: os.path.join(d, 'loop', 'model'),
       r"cannot be created: '.*/loop' is a symbolic link loop"),
  )
  def test_bad_export_dir_is_one_line_before_anything_is_written(self, make, message):
    with open(os.path.join(self.dir, 'file'), 'w') as f:
      f.write('')
    os.symlink(os.path.join(self.dir, 'gone'), os.path.join(self.dir, 'dangling'))
    os.symlink('loop', os.path.join(self.dir, 'loop'))
    before = sorted(os.listdir(self.dir))
    for call in (tf_mp.check_export_dir,
                 lambda path: tf_mp.export_saved_model(tf_mp.build_model(None, SMALL), path)):
      with self.assertRaises(tf_mp.TfMpError) as caught:
        call(make(self.dir))
      self.assertRegex(one_line(self, caught.exception), message)
      self.assertEqual(sorted(os.listdir(self.dir)), before)
    self.assertTrue(os.path.isdir(os.getcwd()))

  def test_unwritable_parent_is_refused(self):
    with read_only_dir(self.dir) as path:
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.check_export_dir(os.path.join(path, 'model'))
      self.assertRegex(one_line(self, caught.exception),
                       'cannot be written: directory .* is not writable')

  def test_missing_parent_is_created(self):
    path = os.path.join(self.dir, 'a', 'b', 'model')
    self.assertEqual(tf_mp.check_export_dir(path), path)
    self.assertTrue(os.path.isdir(os.path.dirname(path)))

  def test_a_link_to_an_empty_directory_receives_the_export(self):
    # The export failed after training (os.rmdir of the link: "Not a directory").
    target = os.path.join(self.dir, 'target')
    os.mkdir(target)
    link = os.path.join(self.dir, 'link')
    os.symlink(target, link)
    self.assertEqual(tf_mp.export_saved_model(tf_mp.build_model(None, SMALL), link), target)
    self.assertTrue(os.path.islink(link))
    self.assertTrue(os.path.exists(os.path.join(link, 'saved_model.pb')))

  def test_failed_export_leaves_nothing(self):
    model = tf_mp.build_model(None, SMALL)
    path = os.path.join(self.dir, 'model')

    def no_space(*args, **kwargs):
      raise OSError(errno.ENOSPC, 'No space left on device')

    original = tf.saved_model.save
    tf.saved_model.save = no_space
    try:
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.export_saved_model(model, path)
    finally:
      tf.saved_model.save = original
    self.assertEqual(one_line(self, caught.exception),
                     f"cannot write the SavedModel to {path!r} (OSError: [Errno 28] "
                     'No space left on device); nothing was left there')
    self.assertEqual(os.listdir(self.dir), [])


class TF1CheckpointValuesTest(parameterized.TestCase, tf.test.TestCase):
  """load_tf1_checkpoint refuses values no training run can continue from."""

  @parameterized.named_parameters(
      ('nan_kernel', 'sub_model_2/hidden/kernel', np.nan,
       'sub_model_2/hidden/kernel has 1 non-finite values (e.g. nan)'),
      ('inf_slot', 'head/bias/Adam', np.inf, 'head/bias/Adam has 1 non-finite values (e.g. inf)'),
      ('negative_step', 'global_step', -100, 'global_step is -100; expected an integer >= 0'),
  )
  def test_bad_value_is_refused_and_nothing_changes(self, name, value, message):
    directory = tempfile.mkdtemp(prefix='tf1_')
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    source = new_trainer(0, config=tf_mp.ModelConfig())
    prefix = tf_mp.compat.v1.save_tf1_checkpoint(source.model, os.path.join(directory, 'model'),
                                       source)
    reader = tf.train.load_checkpoint(prefix)
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    spoiled = np.array(arrays[name])
    spoiled.flat[0] = value
    arrays[name] = spoiled
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                      shape_and_slices=[''] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])
    target = new_trainer(1, config=tf_mp.ModelConfig())
    before = {variable_name(v): v.numpy() for v in target.model.variables}
    before['step'] = target.step.numpy()
    with self.assertRaises(tf_mp.TfMpError) as caught:
      tf_mp.compat.v1.load_tf1_checkpoint(target.model, prefix, target)
    self.assertIn(message, one_line(self, caught.exception))
    self.assertEndsWith(str(caught.exception), 'Nothing was loaded')
    after = {variable_name(v): v.numpy() for v in target.model.variables}
    after['step'] = target.step.numpy()
    for key, value in before.items():
      self.assertAllEqual(value, after[key], msg=key)


_MODEL = None


def model():
  global _MODEL
  if _MODEL is None:
    _MODEL = tf_mp.build_model(THREE, SMALL)
  return _MODEL


# name, call, the start of the one-line message.
_BAD_CALLS = (
    ('build_model_number', lambda: tf_mp.build_model(123), 'devices 123 is not a device list'),
    ('build_model_config', lambda: tf_mp.build_model(None, 5),
     'config must be a tf_mp.ModelConfig, got 5'),
    ('model_int32', lambda: model()(np.zeros([2, 16], np.int32)),
     'model: inputs have dtype int32; expected float32 [batch, 16]'),
    ('model_float64', lambda: model()(np.zeros([2, 16], np.float64)),
     'model: inputs have dtype float64; expected float32 [batch, 16]'),
    ('model_tensor_int64', lambda: model()(tf.zeros([2, 16], tf.int64)),
     'model: inputs have dtype int64; expected float32'),
    ('model_text', lambda: model()('abc'), "model: inputs 'abc' are not float32 numbers"),
    ('sub_model_float64', lambda: model().sub_models[0](np.zeros([2, 16])),
     'sub_model_1: inputs have dtype float64'),
    ('load_npz_none', lambda: tf_mp.load_npz(None), 'data file None is not a path'),
    ('load_npz_directory', lambda: tf_mp.load_npz(tempfile.gettempdir()),
     f'data file {tempfile.gettempdir()!r} is a directory'),
    ('ragged_x', lambda: tf_mp.check_arrays([[1.0] * 16, [1.0]], [0, 1], 'data', 16, 4),
     "data: 'x' is not a rectangular array of numbers"),
    ('ragged_fit', lambda: tf_mp.Trainer(model()).fit([[1.0] * 16, [1.0]], [0, 1], steps=1),
     "training data: 'x' is not a rectangular array"),
    ('synthetic_negative_seed', lambda: tf_mp.synthetic_data(-1),
     'seed must be an integer >= 0, got -1'),
    ('synthetic_float_seed', lambda: tf_mp.synthetic_data(0.5),
     'seed must be an integer >= 0, got 0.5'),
    ('synthetic_no_examples', lambda: tf_mp.synthetic_data(0, 0),
     'num_examples must be a positive integer, got 0'),
    ('config_input_units', lambda: tf_mp.ModelConfig(input_units=0),
     'ModelConfig.input_units must be a positive integer, got 0'),
    ('config_classes', lambda: tf_mp.ModelConfig(num_classes=0),
     'ModelConfig.num_classes must be a positive integer, got 0'),
    ('config_seed', lambda: tf_mp.ModelConfig(seed='a'),
     "ModelConfig.seed must be an integer, got 'a'"),
    ('config_sub_models', lambda: tf_mp.ModelConfig(sub_models=5),
     'ModelConfig.sub_models must be a sequence of SubModelConfig, got 5'),
    ('config_no_sub_models', lambda: tf_mp.ModelConfig(sub_models=()),
     'config.sub_models is empty'),
    ('sub_model_config', lambda: tf_mp.SubModelConfig(hidden_units=-3),
     'SubModelConfig.hidden_units must be a positive integer, got -3'),
    ('lm_huge_context', lambda: lm.build_lm(lm.LMConfig(context=10**9), ['cpu:0']),
     'LMConfig.context 1000000000 makes attention scores of 4,000,000,000,000,000,000 '
     'elements per window (4 heads x 1000000000 x 1000000000), more than '
     'TensorFlow handles; expected a context of at most 23,170'),
    # What the programs' flags reach (tf_mp/cli.py refuses them earlier too).
    ('devices_huge_cpu_index', lambda: tf_mp.resolve_devices('cpu:99999999999999999999'),
     "device name 'cpu:99999999999999999999' has index 99999999999999999999; expected an "
     'index from 0 to 2147483647'),
    ('tf_config_same_address', lambda: parse_tf_config(json.dumps(
        {'cluster': {'worker': ['127.0.0.1:29403', '127.0.0.1:29403']},
         'task': {'type': 'worker', 'index': 0}})),
     'TF_CONFIG tasks worker:0 and worker:1 have the same address 127.0.0.1:29403; '
     'expected one address (host:port) per task'),
    ('strategy_nan_peer_timeout', lambda: tf_mp.distribute.create_strategy(
        'none', 'cpu:0', peer_timeout=float('nan')),
     'peer timeout must be a finite number of seconds >= 0 (0: wait forever), got nan'),
    ('strategy_nan_collective_timeout', lambda: tf_mp.distribute.create_strategy(
        'none', 'cpu:0', collective_timeout=float('nan')),
     'collective timeout must be a finite number >= 0, got nan'),
    ('strategy_infinite_collective_timeout', lambda: tf_mp.distribute.create_strategy(
        'none', 'cpu:0', collective_timeout=float('inf')),
     'collective timeout must be a finite number >= 0, got inf'),
    ('lm_infinite_temperature', lambda: lm.check_sampling(
        lm.CharVocab.from_text('abc'), 'a', 5, float('inf')),
     'temperature must be a finite number >= 0, got inf'),
    ('lm_d_model_too_large', lambda: lm.build_lm(lm.LMConfig(d_model=10**7, num_heads=1),
                                                 ['cpu:0']),
     "the tiny LM's attention kernel would be [10000000, 10000000], "
     '100,000,000,000,000 elements, more than TensorFlow handles (2,147,483,647); '
     'expected smaller sizes (d_model 10000000, mlp_units 512, vocabulary 96)'),
    ('lm_mlp_too_large', lambda: lm.check_lm_fits(lm.LMConfig(mlp_units=10**8)),
     "the tiny LM's MLP kernel would be [128, 100000000]"),
    ('lm_batch_too_large', lambda: lm.check_lm_fits(lm.LMConfig(), 10**6),
     # [batch, context, 512]: the MLP's hidden layer, and the attention scores
     # (4 heads x 128 x 128 per window) are as large.
     'batch_size 1000000 of windows of 128 makes a tensor of 65,536,000,000 elements, '
     'more than TensorFlow handles (2,147,483,647); expected a batch of at most 32,767'),
    ('lm_blocks_beyond_memory', lambda: lm.check_lm_fits(
        lm.LMConfig(num_blocks=100000), 32, available_bytes=2**34),
     'the tiny LM (100000 blocks, d_model 128, mlp_units 512, context 128) needs about '),
    ('batch_indices', lambda: tf_mp.batch_indices(0, 0, 10),
     'batch_size must be a positive integer, got 0'),
)


class BadArgumentTest(parameterized.TestCase, tf.test.TestCase):
  """Public functions answer bad arguments with one TfMpError line."""

  @parameterized.named_parameters(*_BAD_CALLS)
  def test_bad_call(self, call, message):
    with self.assertRaises(tf_mp.TfMpError) as caught:
      call()
    self.assertStartsWith(one_line(self, caught.exception), message)

  def test_a_list_of_floats_is_still_accepted(self):
    self.assertEqual(model()([[0.5] * 16]).shape, [1, 4])

  def test_npy_renamed_npz_and_text_file(self):
    directory = tempfile.mkdtemp(prefix='npz_')
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    npy = os.path.join(directory, 'data.npz')
    np.save(npy, np.zeros(3))
    os.rename(npy + '.npy', npy)
    text = os.path.join(directory, 'text.npz')
    with open(text, 'w') as f:
      f.write('1,2,3\n')
    for path in (npy, text):
      with self.assertRaises(tf_mp.TfMpError) as caught:
        tf_mp.load_npz(path)
      message = one_line(self, caught.exception)
      self.assertStartsWith(message, f'data file {path!r} is not a readable .npz '
                            'archive (not a zip file, as np.savez writes)')
      self.assertNotIn('allow_pickle', message)


class BatchFitTest(tf.test.TestCase):
  """The batch size against the data, TensorFlow's limits and the memory."""

  def test_batch_larger_than_the_data_is_refused_before_any_step(self):
    trainer = tf_mp.Trainer(model())
    with self.assertRaises(tf_mp.TfMpError) as caught:
      trainer.fit(*small_data(), steps=5, batch_size=65)
    self.assertEqual(one_line(self, caught.exception),
                     'batch_size 65 is larger than the 64 examples; expected at '
                     'most 64 (a step would use rows more than once)')
    self.assertEqual(int(trainer.step.numpy()), 0)

  def test_tensor_too_large_for_tensorflow(self):
    # The document's model: a [10^7, 256] hidden activation has 2.56e9 elements
    # (`--batch_size 10000000` crashed with a segmentation fault).
    document = tf_mp.build_model(None)
    x = tf.TensorSpec([10**8, 128], tf.float32)  # shape and dtype, no memory
    with self.assertRaises(tf_mp.TfMpError) as caught:
      check_batch_fits(document, x, 10**7, available_bytes=2**60)
    self.assertEqual(one_line(self, caught.exception),
                     'batch_size 10000000 makes a tensor of 2,560,000,000 elements, '
                     'more than TensorFlow handles (2,147,483,647); expected a '
                     'batch of at most 8,388,607')
    check_batch_fits(document, x, 8388607, available_bytes=2**60)

  def test_step_larger_than_memory(self):
    document = tf_mp.build_model(None)
    x = tf.TensorSpec([10**6, 128], tf.float32)
    # 128 + 3 * (256 + 64) + 10 floats per example, 4 bytes, 3 copies.
    needed = 10**5 * (128 + 3 * 320 + 10) * 4 * 3
    check_batch_fits(document, x, 10**5, available_bytes=needed)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      check_batch_fits(document, x, 10**5, available_bytes=needed // 2)
    self.assertEqual(one_line(self, caught.exception),
                     'batch_size 100000 needs about 1.2 GiB for one step '
                     '(estimated), more than the 0.6 GiB of memory available; '
                     'expected a batch of at most about 50,000')

  def test_token_windows_count_every_position(self):
    config = lm.LMConfig(vocab_size=13, context=12, d_model=18, num_heads=6,
                         num_blocks=1, mlp_units=24)
    tiny = lm.build_lm(config, ['cpu:0'])
    x = tf.TensorSpec([10**9, 12], tf.int32)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'makes a tensor of'):
      check_batch_fits(tiny, x, 10**8, available_bytes=2**60)


class LMSizeTest(tf.test.TestCase):
  """check_lm_fits: the tiny LM's sizes against TensorFlow's limits and the memory, before building."""

  def test_parameter_count_is_the_built_models(self):
    config = lm.LMConfig(vocab_size=13, context=12, d_model=18, num_heads=6,
                         num_blocks=2, mlp_units=24)
    model = lm.build_lm(config, ['cpu:0', 'cpu:1'])
    self.assertEqual(config.num_parameters,
                     sum(int(np.prod(v.shape)) for v in model.trainable_variables))

  def test_weights_and_a_step_count_against_the_memory(self):
    config = lm.LMConfig()
    lm.check_lm_fits(config, 32, available_bytes=2**40)
    weights = config.num_parameters * 4 * 4  # float32: values, gradients, Adam's m and v
    lm.check_lm_fits(config, available_bytes=weights)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      lm.check_lm_fits(config, available_bytes=weights - 1)
    self.assertRegex(one_line(self, caught.exception),
                     r'^the tiny LM \(4 blocks, d_model 128, mlp_units 512, context 128\) '
                     rf'needs about 0.0 GiB for its {config.num_parameters:,} weights '
                     r'with their gradients and Adam slots \(estimated\), more than the '
                     r'0.0 GiB of memory available; expected smaller sizes$')
    with self.assertRaises(tf_mp.TfMpError) as caught:
      lm.check_lm_fits(config, 32, available_bytes=weights)
    self.assertIn('Adam slots and one step of 32 windows (estimated)',
                  one_line(self, caught.exception))


class SummaryWriterTest(tf.test.TestCase):

  def test_full_disk_is_one_line(self):
    # The TensorBoard writer's flush failed with a 66-line traceback.
    if os.geteuid() != 0:
      self.skipTest('mounting a tiny tmpfs needs root')
    from tf_mp import cli  # pylint: disable=g-import-not-at-top
    path = tempfile.mkdtemp(prefix='summaries_')
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', path],
                      capture_output=True, check=False).returncode:
      self.skipTest('cannot mount a tmpfs here')
    self.addCleanup(subprocess.run, ['umount', path], check=False)
    logger = cli.StepLogger(os.path.join(path, 'logs'))
    with self.assertRaises(tf_mp.TfMpError) as caught:
      for step in range(10000):
        logger(step, np.float32(1.5))
    self.assertRegex(one_line(self, caught.exception),
                     rf"^cannot write TensorBoard summaries to '{path}/logs' at step "
                     rf'{step} \(ResourceExhaustedError: {path}/logs/events.out.tfevents'
                     r'\S+; No space left on device\); training stopped there, '
                     'checkpoints already saved are intact$')
    logger.close()  # The writer is gone: nothing more to flush, nothing raised.


class FilesTest(tf.test.TestCase):

  def test_atomic_write_keeps_the_old_content_when_it_fails(self):
    directory = tempfile.mkdtemp(prefix='files_')
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, 'run.json')
    write_text_atomic(path, 'old')
    original = os.replace

    def no_space(src, dst):
      raise OSError(errno.ENOSPC, 'No space left on device')

    os.replace = no_space
    try:
      with self.assertRaises(tf_mp.TfMpError) as caught:
        write_text_atomic(path, 'new', 'run file')
    finally:
      os.replace = original
    self.assertEqual(one_line(self, caught.exception),
                     f'cannot write run file {path!r} (no space left on device); '
                     'its previous content is unchanged')
    with open(path) as f:
      self.assertEqual(f.read(), 'old')
    self.assertEqual(os.listdir(directory), ['run.json'])

  def test_check_writable_dir_on_a_file(self):
    fd, path = tempfile.mkstemp()
    os.close(fd)
    self.addCleanup(os.remove, path)
    with self.assertRaises(tf_mp.TfMpError) as caught:
      check_writable_dir(path, 'log directory')
    self.assertEqual(one_line(self, caught.exception),
                     f'log directory {path!r} exists and is not a directory; '
                     'expected a directory (or a path where one can be created)')


if __name__ == '__main__':
  tf.test.main()
