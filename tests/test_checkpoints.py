"""Checkpoints: resume equals never stopping, SIGKILL mid-run, interrupted writes, other layouts."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import assert_weights_match, build_model_in, draw_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, 'examples', 'tutorial.py')
THREE = 'cpu:0,cpu:1,cpu:2'


def new_trainer(seed: int, kind: str = 'none', devices: str = THREE):
  layout = tf_mp.distribute.create_strategy(kind, devices)
  model = build_model_in(layout, tf_mp.ModelConfig(seed=seed))
  return tf_mp.Trainer(model, strategy=layout)


def state(trainer) -> dict:
  """Model weights, Adam slots and beta powers, and the step, by name."""
  values = {v.name: v.numpy() for v in trainer.model.trainable_variables}
  values.update({n: v.numpy() for n, v in trainer.optimizer.slots().items()})
  values['step'] = trainer.step.numpy()
  return values


class CheckpointTest(parameterized.TestCase, tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def test_resume_is_identical_to_never_stopping(self):
    seed = draw_seed()
    x, y = tf_mp.synthetic_data(seed, num_examples=512)
    straight = new_trainer(seed)
    straight.fit(x, y, steps=40, batch_size=32)
    first = new_trainer(seed)
    saver = tf_mp.TrainingCheckpoints(self.dir, first)
    self.assertIsNone(saver.restore())
    first.fit(x, y, steps=25, batch_size=32, checkpoint_every=10,
              on_checkpoint=saver.save)
    self.assertEqual([os.path.basename(p) for p in saver.manager.checkpoints],
                     ['ckpt-10', 'ckpt-20', 'ckpt-25'])
    # A new process would build from another seed: the checkpoint must win.
    second = new_trainer(seed + 1)
    restored = tf_mp.TrainingCheckpoints(self.dir, second).restore()
    self.assertEqual(os.path.basename(restored), 'ckpt-25')
    self.assertEqual(int(second.step.numpy()), 25)
    second.fit(x, y, steps=40, batch_size=32)
    for name, value in state(straight).items():
      self.assertAllEqual(value, state(second)[name], msg=f'{name}, seed {seed}')

  def test_interrupted_write_leaves_the_previous_checkpoint_loadable(self):
    seed = draw_seed()
    x, y = tf_mp.synthetic_data(seed, num_examples=256)
    trainer = new_trainer(seed)
    saver = tf_mp.TrainingCheckpoints(self.dir, trainer)
    trainer.fit(x, y, steps=20, batch_size=16, checkpoint_every=10,
                on_checkpoint=saver.save)
    at_20 = state(trainer)
    # A crash while ckpt-30 was being written: TensorFlow's saver writes the
    # shards into `<prefix>_temp/` and merges them into `<prefix>.index`; the
    # `checkpoint` state file is rewritten last. Leave both halves behind.
    os.makedirs(os.path.join(self.dir, 'ckpt-30_temp'))
    with open(os.path.join(self.dir, 'ckpt-30_temp',
                           'part-00000-of-00001.data-00000-of-00001'), 'wb') as f:
      f.write(b'\x00' * 1000)
    with open(os.path.join(self.dir, 'ckpt-20.index'), 'rb') as f:
      index = f.read()
    with open(os.path.join(self.dir, 'ckpt-30.index'), 'wb') as f:
      f.write(index[:len(index) // 2])
    trainer.fit(x, y, steps=25, batch_size=16)  # Moves on, unsaved.

    fresh = new_trainer(seed + 1)
    restored = tf_mp.TrainingCheckpoints(self.dir, fresh).restore()
    self.assertEqual(os.path.basename(restored), 'ckpt-20')
    for name, value in at_20.items():
      self.assertAllEqual(value, state(fresh)[name], msg=f'{name}, seed {seed}')

    # Worse: the newest *listed* checkpoint is damaged (a copy cut short). The
    # one before it is used, and the fallback is reported.
    data = os.path.join(self.dir, 'ckpt-20.data-00000-of-00001')
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 3)
    messages = []
    other = new_trainer(seed + 2)
    restored = tf_mp.TrainingCheckpoints(self.dir, other, log=messages.append).restore()
    self.assertEqual(os.path.basename(restored), 'ckpt-10')
    self.assertEqual(int(other.step.numpy()), 10)
    self.assertLen(messages, 1)
    self.assertIn('ckpt-20 is unreadable', messages[0])
    # Saving again after such a restore works and is found next time.
    tf_mp.TrainingCheckpoints(self.dir, other).save()
    self.assertEqual(tf_mp.TrainingCheckpoints(self.dir, new_trainer(seed)).latest,
                     os.path.join(self.dir, 'ckpt-10'))

  def test_all_checkpoints_unreadable_is_one_clear_error(self):
    trainer = new_trainer(0)
    saver = tf_mp.TrainingCheckpoints(self.dir, trainer)
    saver.save()
    os.remove(os.path.join(self.dir, 'ckpt-0.index'))
    with self.assertRaisesRegex(tf_mp.TfMpError, 'no checkpoint in .* can be read'):
      tf_mp.TrainingCheckpoints(self.dir, new_trainer(0)).restore()

  def test_checkpoint_of_another_model_is_refused(self):
    tf_mp.TrainingCheckpoints(self.dir, new_trainer(0)).save()
    model = tf_mp.build_model(THREE.split(','), tf_mp.ModelConfig(
        sub_models=(tf_mp.SubModelConfig(hidden_units=8),) * 3))
    with self.assertRaises(tf_mp.TfMpError) as caught:
      tf_mp.TrainingCheckpoints(self.dir, tf_mp.Trainer(model)).restore()
    self.assertIn('does not match this model', str(caught.exception))
    self.assertNotIn('\n', str(caught.exception))

  @parameterized.named_parameters(
      ('not_a_directory', lambda d: os.path.join(d, 'file'), 'is not a directory'),
      ('not_a_path', lambda d: '', 'is not a path'),
  )
  def test_bad_directory(self, make, message):
    with open(os.path.join(self.dir, 'file'), 'w') as f:
      f.write('x')
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      tf_mp.TrainingCheckpoints(make(self.dir), new_trainer(0))

  def test_restore_across_layouts(self):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    x, y = tf_mp.synthetic_data(seed, num_examples=512)
    probe = rng.standard_normal((16, 128)).astype(np.float32)
    saved = new_trainer(seed)
    saved.fit(x, y, steps=20, batch_size=32)
    tf_mp.TrainingCheckpoints(self.dir, saved).save()
    at_save = saved.model(probe)
    saved.fit(x, y, steps=30, batch_size=32)  # The reference goes on 10 steps.
    for kind, devices in (('none', 'cpu:0'), ('mirrored', 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5')):
      with self.subTest(kind):
        trainer = new_trainer(seed + 1, kind, devices)
        tf_mp.TrainingCheckpoints(self.dir, trainer).restore()
        self.assertEqual(int(trainer.step.numpy()), 20)
        self.assertAllClose(at_save, trainer.model(probe), atol=1e-5, rtol=0,
                            msg=f'{kind}, seed {seed}')
        trainer.fit(x, y, steps=30, batch_size=32)
        # Ten more steps on another layout: equal up to the rounding that
        # tests/testing.py describes (weights and the gradient-accumulating
        # Adam slots alike).
        for variables in (lambda t: t.model.trainable_variables,
                          lambda t: t.optimizer.slots().values()):
          assert_weights_match(*[{v.name: v.numpy() for v in variables(t)}
                                 for t in (saved, trainer)], f'{kind}, seed {seed}')


class CrashTest(tf.test.TestCase):

  def test_sigkill_then_rerun_ends_with_the_uninterrupted_weights(self):
    seed = draw_seed()
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    command = [sys.executable, TUTORIAL, '--steps', '400', '--log_every', '50',
               '--checkpoint_every', '50', '--checkpoint_dir', directory,
               '--devices', THREE, '--seed', str(seed)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    process = subprocess.Popen(command, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)
    try:
      for line in process.stdout:
        if line.startswith('Step: 100 '):
          break  # ckpt-100 is written before this line is printed.
      process.send_signal(signal.SIGKILL)
      process.wait(timeout=60)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    self.assertEqual(process.returncode, -signal.SIGKILL,
                     f'the first run finished before it was killed (seed {seed})')
    self.assertLess(int(tf.train.latest_checkpoint(directory).split('-')[-1]), 400)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300,
                           env=env)
    self.assertEqual(rerun.returncode, 0, rerun.stderr[-2000:])
    resumed = [l for l in rerun.stdout.splitlines() if l.startswith('Resumed from ')]
    self.assertLen(resumed, 1, rerun.stdout)
    self.assertRegex(resumed[0], r'^Resumed from .*ckpt-(\d+) at step \1$')
    self.assertNotIn('Step: 0 ', rerun.stdout)

    x, y = tf_mp.synthetic_data(seed)
    straight = new_trainer(seed)
    straight.fit(x, y, steps=400, batch_size=64)
    finished = new_trainer(seed + 1)
    restored = tf_mp.TrainingCheckpoints(directory, finished).restore()
    self.assertEqual(os.path.basename(restored), 'ckpt-400')
    for name, value in state(straight).items():
      self.assertAllEqual(value, state(finished)[name], msg=f'{name}, seed {seed}')


if __name__ == '__main__':
  tf.test.main()
