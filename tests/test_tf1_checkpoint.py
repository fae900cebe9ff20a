"""TF1 checkpoints: load by name onto any devices, all or nothing; save so TF1 restores it."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import draw_seed
from tf_mp.adam import variable_name

DEVICES = ['cpu:0', 'cpu:1', 'cpu:2']
PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'tools', 'reference', 'tf1_program.py')



def temp_dir(test) -> str:
  """A fresh directory removed after `test` (absl's create_tempdir needs parsed flags)."""
  path = tempfile.mkdtemp(prefix='tf1_checkpoint_')
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def build(seed: int, devices=DEVICES, with_trainer: bool = True):
  model = tf_mp.build_model(devices, tf_mp.ModelConfig(seed=seed))
  return model, (tf_mp.Trainer(model) if with_trainer else None)


def trained(seed: int, steps: int = 3):
  """A model and trainer after a few Adam steps, so the slots are not zeros."""
  model, trainer = build(seed)
  x, y = tf_mp.synthetic_data(seed, num_examples=256)
  for step in range(steps):
    rows = tf_mp.batch_indices(step, 64, len(x))
    trainer.train_step(x[rows], y[rows])
  return model, trainer


def snapshot(model, trainer=None) -> dict:
  values = {variable_name(v): v.numpy() for v in model.variables}
  if trainer is not None:
    values.update({n: v.numpy() for n, v in trainer.optimizer.slots().items()})
    values['step'] = trainer.step.numpy()
  return values


def write_checkpoint(prefix: str, arrays: dict) -> str:
  """A Saver-format checkpoint holding exactly `arrays` (name -> value)."""
  names = sorted(arrays)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[''] * len(names),
                    tensors=[tf.constant(arrays[n]) for n in names])
  return prefix


def tf1_arrays(model, trainer) -> dict:
  """What the document's TF1 Saver writes: variables, Adam slots, beta powers."""
  arrays = {variable_name(v): v.numpy() for v in model.variables}
  arrays.update({n: v.numpy() for n, v in trainer.optimizer.slots().items()})
  return arrays


def rename(arrays, old, new):
  arrays = dict(arrays)
  arrays[new] = arrays.pop(old)
  return arrays


def replace(arrays, name, value):
  return dict(arrays, **{name: value})


def drop(arrays, name):
  return {k: v for k, v in arrays.items() if k != name}


def truncate(path: str, keep: float) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * keep)])


def overwrite(path: str) -> None:
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(np.random.default_rng(draw_seed()).bytes(size))


# name, how the checkpoint is spoiled, whether a trainer is given, message parts.
_BAD_CHECKPOINTS = (
    ('renamed_variable',
     lambda a, p: write_checkpoint(p, rename(a, 'sub_model_2/output/kernel',
                                             'sub_model_2/output/weights')),
     False, ['missing from the checkpoint: sub_model_2/output/kernel [256, 64]',
             'not in the model: sub_model_2/output/weights [256, 64]']),
    ('wrong_shape',
     lambda a, p: write_checkpoint(p, replace(a, 'head/kernel',
                                              np.zeros([192, 11], np.float32))),
     False, ['wrong shape or dtype: head/kernel is [192, 11] float32 in the checkpoint, '
             '[192, 10] float32 in the model']),
    ('wrong_dtype',
     lambda a, p: write_checkpoint(p, replace(a, 'head/bias',
                                              np.zeros([10], np.float64))),
     False, ['head/bias is [10] float64 in the checkpoint']),
    ('missing_variable',
     lambda a, p: write_checkpoint(p, drop(a, 'sub_model_3/hidden/bias')),
     False, ['missing from the checkpoint: sub_model_3/hidden/bias [256]']),
    ('unexpected_variable',
     lambda a, p: write_checkpoint(p, dict(a, **{'sub_model_4/hidden/kernel':
                                                 np.zeros([128, 256], np.float32)})),
     False, ['not in the model: sub_model_4/hidden/kernel [128, 256]']),
    ('several_problems_listed_together',
     lambda a, p: write_checkpoint(
         p, drop(replace(a, 'head/kernel', np.zeros([10, 192], np.float32)),
                 'sub_model_1/hidden/kernel')),
     False, ['missing from the checkpoint: sub_model_1/hidden/kernel [128, 256]',
             'wrong shape or dtype: head/kernel is [10, 192]']),
    ('partial_adam_state',
     lambda a, p: write_checkpoint(p, drop(a, 'head/kernel/Adam_1')),
     True, ['missing from the checkpoint: head/kernel/Adam_1 [192, 10]']),
    ('adam_slot_wrong_shape',
     lambda a, p: write_checkpoint(
         p, replace(a, 'sub_model_1/output/bias/Adam', np.zeros([65], np.float32))),
     True, ['sub_model_1/output/bias/Adam is [65] float32 in the checkpoint']),
    ('truncated_data_file',
     lambda a, p: truncate(write_checkpoint(p, a) + '.data-00000-of-00001', 0.5),
     True, ['is corrupt']),
    ('truncated_index_file',
     lambda a, p: truncate(write_checkpoint(p, a) + '.index', 0.5),
     True, ['unreadable or corrupt']),
    ('garbage_data_file',
     lambda a, p: overwrite(write_checkpoint(p, a) + '.data-00000-of-00001'),
     False, ['is corrupt']),
    ('missing_data_file',
     lambda a, p: os.remove(write_checkpoint(p, a) + '.data-00000-of-00001'),
     False, ['checkpoint']),
    ('missing_path', lambda a, p: None, False,
     ['not found', '.index does not exist']),
)


class LoadTest(parameterized.TestCase):
  """Loads checkpoints written from one trained source model (built once)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.seed = draw_seed()
    cls.source_model, cls.source_trainer = trained(cls.seed)

  @parameterized.named_parameters(*_BAD_CHECKPOINTS)
  def test_bad_checkpoint_is_rejected_and_nothing_changes(self, spoil, with_trainer,
                                                          message_parts):
    seed = self.seed
    source_model, source_trainer = self.source_model, self.source_trainer
    prefix = os.path.join(temp_dir(self), 'model')
    spoil(tf1_arrays(source_model, source_trainer), prefix)
    model, trainer = build(seed + 1, with_trainer=True)
    trainer = trainer if with_trainer else None
    before = snapshot(model, trainer)
    with self.assertRaises(tf_mp.TfMpError, msg=f'seed {seed}') as raised:
      tf_mp.compat.v1.load_tf1_checkpoint(model, prefix, trainer)
    message = str(raised.exception)
    self.assertNotIn('\n', message)
    for part in message_parts:
      self.assertIn(part, message, f'seed {seed}')
    after = snapshot(model, trainer)
    self.assertEqual(sorted(before), sorted(after))
    for name in before:
      np.testing.assert_array_equal(after[name], before[name],
                                    err_msg=f'{name} changed; seed {seed}')

  def test_directory_without_checkpoint_file(self):
    model, _ = build(draw_seed(), with_trainer=False)
    directory = temp_dir(self)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'has no "checkpoint" file'):
      tf_mp.compat.v1.load_tf1_checkpoint(model, directory)

  @parameterized.named_parameters(
      ('none', None),
      ('number', 7),
      ('empty', ''),
  )
  def test_path_that_is_not_a_path(self, path):
    model, _ = build(draw_seed(), with_trainer=False)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'is not a path'):
      tf_mp.compat.v1.load_tf1_checkpoint(model, path)

  @parameterized.named_parameters(
      ('same_devices', DEVICES),
      ('other_devices', ['cpu:3', 'cpu:4', 'cpu:5']),
      ('one_device', ['cpu:1']),
      ('unplaced', None),
  )
  def test_loads_onto_any_devices_with_adam_state(self, devices):
    seed = self.seed
    source_model, source_trainer = self.source_model, self.source_trainer
    prefix = write_checkpoint(
        os.path.join(temp_dir(self), 'model'),
        tf1_arrays(source_model, source_trainer))
    model, trainer = build(seed + 1, devices)
    placed = {variable_name(v): v.device for v in model.variables}
    loaded = tf_mp.compat.v1.load_tf1_checkpoint(model, prefix, trainer)
    self.assertLen(loaded, 14 + 28 + 2)
    want = snapshot(source_model, source_trainer)
    got = snapshot(model, trainer)
    for name in want:
      if name != 'step':
        np.testing.assert_array_equal(got[name], want[name],
                                      err_msg=f'{name}; seed {seed}')
    self.assertEqual(placed, {variable_name(v): v.device for v in model.variables})

  def test_without_trainer_the_adam_state_is_skipped(self):
    seed = self.seed
    source_model, source_trainer = self.source_model, self.source_trainer
    prefix = write_checkpoint(
        os.path.join(temp_dir(self), 'model'),
        tf1_arrays(source_model, source_trainer))
    model, _ = build(seed + 1, with_trainer=False)
    loaded = tf_mp.compat.v1.load_tf1_checkpoint(model, prefix)
    self.assertLen(loaded, 14)
    for v, w in zip(model.variables, source_model.variables):
      np.testing.assert_array_equal(v.numpy(), w.numpy())

  def test_checkpoint_without_adam_state_leaves_the_optimizer(self):
    seed = self.seed
    source_model = self.source_model
    prefix = write_checkpoint(
        os.path.join(temp_dir(self), 'model'),
        {variable_name(v): v.numpy() for v in source_model.variables})
    model, trainer = trained(seed + 1)
    slots = {n: v.numpy() for n, v in trainer.optimizer.slots().items()}
    tf_mp.compat.v1.load_tf1_checkpoint(model, prefix, trainer)
    for name, value in trainer.optimizer.slots().items():
      np.testing.assert_array_equal(value.numpy(), slots[name], err_msg=name)

  def test_trainer_of_another_model(self):
    seed = draw_seed()
    model, _ = build(seed, with_trainer=False)
    _, other_trainer = build(seed)
    prefix = tf_mp.compat.v1.save_tf1_checkpoint(
        model, os.path.join(temp_dir(self), 'model'))
    with self.assertRaisesRegex(tf_mp.TfMpError, 'different model'):
      tf_mp.compat.v1.load_tf1_checkpoint(model, prefix, other_trainer)


class SaveTest(parameterized.TestCase):

  def test_round_trip_keeps_everything(self):
    seed = draw_seed()
    model, trainer = trained(seed, steps=4)
    directory = temp_dir(self)
    prefix = tf_mp.compat.v1.save_tf1_checkpoint(model, os.path.join(directory, 'model'),
                                       trainer)
    names = dict(tf.train.list_variables(prefix))
    self.assertEqual(names['sub_model_2/hidden/kernel/Adam_1'], [128, 256])
    self.assertEqual(names['beta1_power'], [])
    copy, copy_trainer = build(seed + 1, ['cpu:5', 'cpu:4', 'cpu:3'])
    tf_mp.compat.v1.load_tf1_checkpoint(copy, directory, copy_trainer)  # via the directory
    want, got = snapshot(model, trainer), snapshot(copy, copy_trainer)
    for name in want:
      np.testing.assert_array_equal(got[name], want[name],
                                    err_msg=f'{name}; seed {seed}')
    self.assertEqual(got['step'], 4)

  @parameterized.named_parameters(
      ('none', None, 'is not a path'),
      ('directory', 'DIR', 'is a directory'),
  )
  def test_bad_path(self, path, message):
    model, _ = build(draw_seed(), with_trainer=False)
    if path == 'DIR':
      path = temp_dir(self)
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      tf_mp.compat.v1.save_tf1_checkpoint(model, path)

  def test_the_tf1_program_restores_and_continues_it(self):
    """Port -> TF1 Saver.restore -> one TF1 Adam step -> port: all values agree."""
    seed = draw_seed()
    model, trainer = trained(seed, steps=3)
    directory = temp_dir(self)
    prefix = tf_mp.compat.v1.save_tf1_checkpoint(model, os.path.join(directory, 'port'),
                                       trainer)
    x, y = tf_mp.synthetic_data(seed + 2, num_examples=128)
    data = os.path.join(directory, 'data.npz')
    np.savez(data, x=x, y=y)
    final = os.path.join(directory, 'tf1_final')
    losses = os.path.join(directory, 'losses.npy')
    result = subprocess.run(
        [sys.executable, PROGRAM, '--data', data, '--steps', '1', '--restore',
         prefix, '--save_final', final, '--losses_out', losses, '--quiet'],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), capture_output=True,
        text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    rows = tf_mp.batch_indices(0, 64, len(x))
    port_loss = trainer.train_step(x[rows], y[rows]).numpy()
    tf1_loss = np.load(losses)[0]
    np.testing.assert_allclose(port_loss, tf1_loss, rtol=1e-6, atol=0,
                               err_msg=f'seed {seed}')
    reader = tf.train.load_checkpoint(final)
    for name, var in list(trainer.optimizer.slots().items()) + [
        (variable_name(v), v) for v in model.variables]:
      np.testing.assert_allclose(var.numpy(), reader.get_tensor(name), rtol=1e-5,
                                 atol=1e-7, err_msg=f'{name}; seed {seed}')


if __name__ == '__main__':
  absltest.main()
