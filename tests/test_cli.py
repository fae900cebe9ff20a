"""What the programs share (tf_mp/cli.py): help, bad flags, signals, checks before training.

The subprocess tests run the real programs; those that stop before TensorFlow
loads (help, flag values) take well under a second each.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, 'examples')
TUTORIAL = [os.path.join(EXAMPLES, 'tutorial.py')]
CONSOLE_TUTORIAL = ['-m', 'tf_mp.tutorial']  # What the tf-mp-tutorial script runs.
PIPELINE = [os.path.join(EXAMPLES, 'pipeline.py')]
TINY_LM = [os.path.join(EXAMPLES, 'tiny_lm.py')]
THREE_CPUS = ['--devices', 'cpu:0,cpu:1,cpu:2']
A_FILE = os.path.abspath(__file__)  # A path that exists and is not a directory.


def env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
              PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))


def run(program, *args, timeout=240):
  return subprocess.run([sys.executable, *program, *args], capture_output=True,
                        text=True, timeout=timeout, env=env(), cwd=ROOT)


def error_lines(stderr: str) -> list:
  # TensorFlow's C++ start-up lines that no log level hides.
  return [l for l in stderr.splitlines()
          if l.strip() and not re.match(r'^[IWE]\d{4} |^WARNING: All log messages', l)]


class HelpTest(parameterized.TestCase):

  @parameterized.product(program=['tutorial', 'pipeline', 'tiny_lm', 'console'],
                         flag=['-h', '--help'])
  def test_help_prints_usage_and_exits_0(self, program, flag):
    command = {'tutorial': TUTORIAL, 'pipeline': PIPELINE, 'tiny_lm': TINY_LM,
               'console': CONSOLE_TUTORIAL}[program]
    result = run(command, flag)
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stderr, '')
    self.assertIn('\nFlags:\n', result.stdout)
    self.assertRegex(result.stdout, r"\n  --steps: [^-]*\(default: '\d+'\)")
    self.assertIn('--[no]verbose', result.stdout)
    self.assertNotIn('--logtostderr', result.stdout)  # absl's own flags stay out.
    if program == 'console':
      self.assertIn('tf-mp-tutorial --devices', result.stdout)
    if program == 'tiny_lm':
      # The shell continuation is shown as typed, not joined into one line.
      self.assertIn('--mlp_units 768 \\\n      --devices', result.stdout)


  def test_the_programs_import_without_tensorflow(self):
    # So that cli.run can set the log level and quiet TensorFlow's C++ start-up
    # lines before TensorFlow loads, and answer --help without loading it.
    result = run(['-c', 'import sys, tf_mp, tf_mp.cli, tf_mp.tutorial; '
                  "print('tensorflow' in sys.modules)"])
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout, 'False\n')


class BadFlagTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('negative_steps', TUTORIAL, ['--steps', '-5'],
       r'flag --steps=-5: -5 is not a positive integer'),
      ('zero_batch', TUTORIAL, ['--batch_size=0'], r'flag --batch_size=0: '),
      ('zero_learning_rate', TUTORIAL, ['--learning_rate=0'],
       r'--learning_rate must be > 0'),
      ('unknown_flag', TUTORIAL, ['--stepz=3'], r"Unknown command line flag 'stepz'"),
      ('not_a_number', TUTORIAL, ['--steps=ten'], r'flag --steps=ten: invalid literal'),
      ('positional', TUTORIAL, ['extra'], r'unexpected arguments: extra'),
      ('console_negative_steps', CONSOLE_TUTORIAL, ['--steps=-5'],
       r'flag --steps=-5: -5 is not a positive integer'),
      ('lm_negative_steps', TINY_LM, ['--steps', '-5'], r'flag --steps=-5: '),
      ('lm_eval_every_0', TINY_LM, ['--eval_every', '0'], r'flag --eval_every=0: '),
      ('lm_context_0', TINY_LM, ['--context=0'], r'flag --context=0: '),
      ('pipeline_micro_batches_0', PIPELINE, ['--micro_batches=0'],
       r'flag --micro_batches=0: '),
      # Checked before TensorFlow loads, so before any training.
      ('a_fourth_device', TUTORIAL, ['--devices', 'cpu:0,cpu:1,cpu:2,cpu:3'],
       r"--devices 'cpu:0,cpu:1,cpu:2,cpu:3' names 4 devices but the model has 3 "
       r'sub-models; expected at most 3 \(one per sub-model\)$'),
      ('a_fourth_device_in_a_group', TUTORIAL, ['--strategy=mirrored', '--devices',
                                                'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5,cpu:0'],
       r"--devices 'cpu:3,cpu:4,cpu:5,cpu:0' names 4 devices"),
      ('checkpoint_dir_under_a_file', TUTORIAL, ['--checkpoint_dir', A_FILE + '/ckpt'],
       r"--checkpoint_dir '.*test_cli.py/ckpt' is under a file"),
      ('logdir_is_a_file', TUTORIAL, ['--logdir', A_FILE],
       r"--logdir '.*test_cli.py' is a file; expected a directory$"),
      ('export_dir_under_a_file', TUTORIAL, ['--export_dir', A_FILE + '/sub/model'],
       r"--export_dir '.*test_cli.py/sub/model' is under a file"),
      ('lm_logdir_is_a_file', TINY_LM, ['--logdir', A_FILE],
       r"--logdir '.*test_cli.py' is a file; expected a directory$"),
  )
  def test_one_line_exit_1_before_anything_runs(self, program, args, message):
    result = run(program, *args)
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertEqual(result.stdout, '')  # No placement, no Step:, no Sample.
    lines = result.stderr.splitlines()
    self.assertLen(lines, 1, result.stderr)
    name = os.path.basename(program[-1]) if program is not CONSOLE_TUTORIAL else 'tutorial.py'
    self.assertRegex(lines[0], rf'^{re.escape(name)}: error: .*{message}')


class ChecksBeforeTrainingTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('one_group', 'cpu:0,cpu:1,cpu:2,cpu:3', "'cpu:0,cpu:1,cpu:2,cpu:3' names 4"),
      ('second_group', 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5,cpu:0',
       "'cpu:3,cpu:4,cpu:5,cpu:0' names 4"))
  def test_device_count_check(self, spec, message):
    with self.assertRaisesRegex(tf_mp.TfMpError, re.escape(message)):
      cli.check_device_count(spec, 3, 'sub-models')

  @parameterized.parameters('auto', 'cpu:0', 'cpu:0,cpu:1,cpu:2', 'gpu:0,gpu:1;gpu:2')
  def test_device_lists_that_fit_pass(self, spec):
    cli.check_device_count(spec, 3, 'sub-models')

  def test_writable_dir_check(self):
    tmp = tempfile.mkdtemp()
    a_file = os.path.join(tmp, 'file')
    with open(a_file, 'w') as f:
      f.write('x')
    cli.check_writable_dir(tmp, 'logdir')
    cli.check_writable_dir(os.path.join(tmp, 'new', 'deeper'), 'logdir')
    self.assertEqual(sorted(os.listdir(tmp)), ['file'])  # Nothing created or left.
    with self.assertRaisesRegex(tf_mp.TfMpError, r"^--logdir '.*/file' is a file; "
                                r'expected a directory$'):
      cli.check_writable_dir(a_file, 'logdir')
    with self.assertRaisesRegex(tf_mp.TfMpError, r"^--export_dir '.*/file/sub' is "
                                r"under a file \('.*/file'\)"):
      cli.check_writable_dir(os.path.join(a_file, 'sub'), 'export_dir')
    with self.assertRaisesRegex(tf_mp.TfMpError, r'^--logdir is empty'):
      cli.check_writable_dir('', 'logdir')


class SignalTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('sigint_console_script', signal.SIGINT, CONSOLE_TUTORIAL, 130),
      ('sigterm_example', signal.SIGTERM, TUTORIAL, 143))
  def test_signal_stops_at_a_step_boundary_and_saves(self, signum, program, code):
    ckpt = os.path.join(tempfile.mkdtemp(), 'ckpt')
    process = subprocess.Popen(
        [sys.executable, *program, *THREE_CPUS, '--steps', '1000000', '--log_every',
         '50', '--checkpoint_dir', ckpt], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env(), cwd=ROOT)
    try:
      for line in process.stdout:  # Bounded by the 240 s timeout of communicate below.
        if line.startswith('Step: 50 '):
          break
      process.send_signal(signum)
      out, err = process.communicate(timeout=240)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
    self.assertEqual(process.returncode, code, err)
    self.assertNotIn('Traceback', err)
    lines = error_lines(err)
    self.assertLen(lines, 1, err)
    name = signal.Signals(signum).name
    match = re.match(rf'^tutorial\.py: stopped by {name} at step (\d+); checkpoint '
                     rf'saved: (.*)$', lines[0])
    self.assertTrue(match, lines[0])
    step = int(match.group(1))
    self.assertEqual(match.group(2), os.path.join(ckpt, f'ckpt-{step}'))
    self.assertEqual(step % 50, 1)  # A chunk ends right after a logging step.
    self.assertNotIn('Done:', out)
    self.assertTrue(os.path.exists(os.path.join(ckpt, f'ckpt-{step}.index')))
    if signum != signal.SIGTERM:
      return
    # Nothing left to train: the export asked for is still made, from the checkpoint.
    export_dir = os.path.join(os.path.dirname(ckpt), 'model')
    result = run(TUTORIAL, *THREE_CPUS, '--steps', str(step), '--checkpoint_dir', ckpt,
                 '--export_dir', export_dir)
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = result.stdout.splitlines()
    self.assertEqual(lines[-3:], [
        f'Resumed from {ckpt}/ckpt-{step} at step {step}',
        f'Nothing to train: already at step {step} of {step}',
        f'SavedModel written to {export_dir}'])
    serve = tf.saved_model.load(export_dir).signatures['serving_default']
    self.assertEqual(serve(features=tf.zeros([2, 128]))['logits'].shape, (2, 10))


class ResumeSettingsTest(tf.test.TestCase):

  def test_resume_with_another_seed_is_one_line_and_changes_nothing(self):
    ckpt = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, ckpt, ignore_errors=True)
    first = run(TUTORIAL, *THREE_CPUS, '--steps', '20', '--log_every', '10',
                '--checkpoint_dir', ckpt, '--checkpoint_every', '10')
    self.assertEqual(first.returncode, 0, first.stderr[-2000:])
    before = {name: os.path.getmtime(os.path.join(ckpt, name)) for name in os.listdir(ckpt)}
    self.assertIn('run_settings.json', before)
    again = run(TUTORIAL, *THREE_CPUS, '--steps', '30', '--checkpoint_dir', ckpt,
                '--seed', '7')
    self.assertEqual(again.returncode, 1)
    lines = error_lines(again.stderr)
    self.assertLen(lines, 1, lines)
    self.assertRegex(lines[0], r"^tutorial.py: error: checkpoint directory .* holds a run "
                     r'with other settings: data: .*; seed: 0 in the checkpoints, 7 now;')
    self.assertNotIn('Step:', again.stdout)
    self.assertEqual(before, {name: os.path.getmtime(os.path.join(ckpt, name))
                              for name in os.listdir(ckpt)})


class ShouldStopTest(tf.test.TestCase):

  def test_fit_stops_at_the_first_boundary_after_should_stop(self):
    model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'], tf_mp.ModelConfig(seed=0))
    trainer = tf_mp.Trainer(model)
    x, y = tf_mp.synthetic_data(0, num_examples=256)
    asked = []
    result = trainer.fit(x, y, steps=1000, batch_size=8, log_every=10,
                         should_stop=lambda: asked.append(1) or len(asked) == 2)
    # Chunks: step 0 alone, then steps 1..10; asked after each.
    self.assertEqual(int(trainer.step.numpy()), 11)
    self.assertEqual((result.first_step, result.last_step, result.steps), (0, 10, 11))
    self.assertTrue(np.isfinite(result.final_loss))


if __name__ == '__main__':
  tf.test.main()
