"""What the programs share (tf_mp/cli.py): help, bad flags, signals, checks before training.

The subprocess tests run the real programs; those that stop before TensorFlow
loads (help, flag values) take well under a second each.
"""

import atexit
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
KERAS = [os.path.join(EXAMPLES, 'tutorial_keras.py')]
THREE_CPUS = ['--devices', 'cpu:0,cpu:1,cpu:2']
A_FILE = os.path.abspath(__file__)  # A path that exists and is not a directory.
# A directory that does not exist (the checks before training create nothing).
NEW_DIR = os.path.join(tempfile.gettempdir(), f'tf_mp_test_cli_{os.getpid()}')
# A directory named like a Keras file (removed when the tests end).
A_KERAS_DIR = tempfile.mkdtemp(suffix='.keras')
atexit.register(os.rmdir, A_KERAS_DIR)


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
       r'--learning_rate must be a finite number > 0; see --help$'),
      ('infinite_learning_rate', TUTORIAL, ['--learning_rate=inf'],
       r'--learning_rate must be a finite number > 0'),
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
      # Values TensorFlow cannot hold: the initializers' seed and the step
      # counter are int64 (a traceback, or training forever, before).
      ('seed_beyond_int64', TUTORIAL, ['--seed=18446744073709551616'],
       r'flag --seed=18446744073709551616: 18446744073709551616 is not an integer in '
       r'the range \[0, 9223372036854775807\]; see --help$'),
      ('negative_seed', TINY_LM, ['--seed=-1'], r'flag --seed=-1: -1 is not an integer'),
      ('steps_beyond_int64', TUTORIAL, ['--steps=99999999999999999999999999'],
       r'flag --steps=99999999999999999999999999: 99999999999999999999999999 is larger '
       r"than 2\^63 - 1 \(9223372036854775807\), the largest integer TensorFlow's "
       r'int64 counters hold; see --help$'),
      ('log_every_beyond_int64', PIPELINE, ['--log_every=99999999999999999999'],
       r'flag --log_every=99999999999999999999: .* is larger than 2\^63 - 1'),
      ('report_steps_bounded', PIPELINE, ['--report_steps=4611686018427387904'],
       r'4611686018427387904 is not an integer in the range \[0, 100\]'),
      ('lm_sample_length_bounded', TINY_LM, ['--sample_length=100000000000'],
       r'100000000000 is not an integer in the range \[0, 10000\]'),
      ('lm_infinite_temperature', TINY_LM, ['--temperature=inf'],
       r'flag --temperature=inf: --temperature must be a finite number >= 0 \(0: the '
       r'most likely character\); see --help$'),
      ('nan_collective_timeout', TUTORIAL, ['--collective_timeout=nan'],
       r'--collective_timeout must be a finite number >= 0 \(0: wait forever\)'),
      ('nan_peer_timeout', TUTORIAL, ['--peer_timeout=nan'],
       r'--peer_timeout must be a finite number >= 0'),
      ('empty_data', TUTORIAL, ['--data='],
       r'--data is empty; expected the path of a .npz file'),
      ('lm_empty_text', TINY_LM, ['--text='], r'--text is empty; expected the path'),
      # A device of another job exists only in a cluster (a TensorFlow
      # "unknown device" traceback before).
      ('remote_device', TUTORIAL, ['--devices', '/job:worker/task:1/device:CPU:0,cpu:0,cpu:1'],
       r"--devices names '/job:worker/task:1/device:CPU:0', a device of job 'worker', "
       r'but this process is in no cluster; expected local devices such as cpu:0 '
       r'\(with --strategy multi_worker, too, each worker places the model on its own '
       r'devices\)$'),
      ('remote_device_mirrored', TUTORIAL, ['--strategy=mirrored', '--devices',
                                            'cpu:0,cpu:1,cpu:2;/job:foo/device:CPU:0'],
       r"--devices names '/job:foo/device:CPU:0', a device of job 'foo'"),
      ('pipeline_remote_device', PIPELINE, ['--devices=/job:foo/task:0/device:CPU:0'],
       r"a device of job 'foo', but this process is in no cluster; expected local "
       r'devices such as cpu:0$'),
      ('lm_remote_device', TINY_LM, ['--devices=/job:foo/task:0/device:CPU:0'],
       r"a device of job 'foo'"),
      # The export directory must be empty when the model is exported, after
      # training: found out then, before.
      ('export_dir_is_checkpoint_dir', TUTORIAL, ['--checkpoint_dir', NEW_DIR,
                                                  '--export_dir', NEW_DIR + '/'],
       rf"--export_dir and --checkpoint_dir are the same directory \('{NEW_DIR}'\); "
       r'expected separate directories \(the export directory must be empty when the '
       r'model is exported\)$'),
      # Found only after training (the export) or in a summary-writer traceback.
      ('export_dir_name_too_long', TUTORIAL, ['--export_dir', NEW_DIR + '/' + 'a' * 256],
       r"--export_dir '.*' has a name of 256 bytes \(a{16}\.\.\.\); expected at most 255, "
       r"the file system's limit$"),
      ('logdir_name_too_long', TINY_LM, ['--logdir', 'b' * 300 + '/lg'],
       r"--logdir 'b{300}/lg' has a name of 300 bytes"),
      ('logdir_path_too_long', TUTORIAL, ['--logdir', NEW_DIR + '/c' * 2100],
       r"--logdir '.{40}'\.\.\. is \d+ bytes long \(as an absolute path\); expected under "
       r"4096, the system's limit$"),
      # tutorial_keras.py: a traceback after training (a directory), a raw AddN
      # shape error, a ResourceExhaustedError (or the OOM killer) before.
      ('keras_save_is_a_directory', KERAS, ['--save', A_KERAS_DIR],
       r"--save '.*\.keras' is a directory; expected the path of a \.keras file$"),
      ('keras_batch_over_replicas', KERAS, ['--strategy=mirrored', '--batch_size=3', '--devices',
                                            'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'],
       r'batch_size 3 is not divisible by the 2 replicas in sync; expected a multiple of 2'),
      ('keras_batch_beyond_examples', KERAS, ['--batch_size=100000000'],
       r'batch_size 100000000 is larger than the \d+ examples; expected at most \d+'),
      # absl read it to the end: the memory filled up (third adversarial run).
      ('flagfile_dev_zero', TUTORIAL, ['--flagfile', '/dev/zero'],
       r"--flagfile '/dev/zero' is not a regular file \(a device, pipe or socket\); "
       r'expected a text file of flags, one per line$'),
      ('logdir_inside_export_dir', TUTORIAL, ['--logdir', NEW_DIR + '/logs',
                                              '--export_dir', NEW_DIR],
       rf"--logdir '{NEW_DIR}/logs' is inside --export_dir '{NEW_DIR}'; expected "
       r'separate directories'),
  )
  def test_one_line_exit_1_before_anything_runs(self, program, args, message):
    result = run(program, *args)
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertEqual(result.stdout, '')  # No placement, no Step:, no Sample.
    lines = result.stderr.splitlines()
    self.assertLen(lines, 1, result.stderr)
    name = os.path.basename(program[-1]) if program is not CONSOLE_TUTORIAL else 'tutorial.py'
    self.assertRegex(lines[0], rf'^{re.escape(name)}: error: .*{message}')
    self.assertFalse(os.path.exists(NEW_DIR))  # Nothing created.


class ChecksBeforeTrainingTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('one_group', 'cpu:0,cpu:1,cpu:2,cpu:3', "'cpu:0,cpu:1,cpu:2,cpu:3' names 4"),
      ('second_group', 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5,cpu:0',
       "'cpu:3,cpu:4,cpu:5,cpu:0' names 4"))
  def test_device_count_check(self, spec, message):
    with self.assertRaisesRegex(tf_mp.TfMpError, re.escape(message)):
      cli.check_device_count(spec, 3, 'sub-models')

  def test_keras_save_through_a_dangling_link_or_to_a_fifo_is_refused_before_training(self):
    tmp = tempfile.mkdtemp()
    link = os.path.join(tmp, 'm.keras')
    os.symlink(os.path.join(tmp, 'gone', 'x.keras'), link)
    result = run(KERAS, '--save', link)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertEqual(result.stderr, f"tutorial_keras.py: error: --save {link!r} cannot be "
                     f"created: {link!r} is a symbolic link to '{tmp}/gone/x.keras', which "
                     'does not exist; expected the path of a .keras file (create the '
                     'target, or remove the link)\n')
    fifo = os.path.join(tmp, 'f.keras')  # The save, after training, waited on it forever.
    os.mkfifo(fifo)
    result = run(KERAS, '--save', fifo)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertEqual(result.stderr, f'tutorial_keras.py: error: --save {fifo!r} is not a '
                     'regular file (a device, pipe or socket); expected the path of a .keras '
                     'file\n')

  def test_flag_files_nested_or_not_must_be_regular_files(self):
    tmp = tempfile.mkdtemp()
    outer, inner = os.path.join(tmp, 'outer'), os.path.join(tmp, 'inner')
    with open(outer, 'w') as f:
      f.write(f'--steps=3\n--flagfile={inner}\n--flagfile={outer}\n')  # Itself: skipped.
    with open(inner, 'w') as f:
      f.write('--flagfile=/dev/zero\n')
    with self.assertRaisesRegex(tf_mp.TfMpError, r"^--flagfile '/dev/zero' is not a regular "
                                r'file \(a device, pipe or socket\)'):
      cli._check_flag_files(['--steps', '2', f'--flagfile={outer}'])  # pylint: disable=protected-access
    with open(inner, 'w') as f:
      f.write('--log_every=1\n')
    cli._check_flag_files(['-flagfile', outer])  # pylint: disable=protected-access

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
    # A broken link on the way: TensorFlow's summary writer failed in a
    # traceback; the export and checkpoint checks said "a file" / "File exists".
    os.symlink(os.path.join(tmp, 'gone'), os.path.join(tmp, 'dangling'))
    os.symlink('loop', os.path.join(tmp, 'loop'))
    for path, link in ((os.path.join(tmp, 'dangling', 'sub'),
                        rf"'{tmp}/dangling' is a symbolic link to '{tmp}/gone', which does "
                        'not exist'),
                       (os.path.join(tmp, 'loop'), rf"'{tmp}/loop' is a symbolic link loop")):
      with self.assertRaisesRegex(tf_mp.TfMpError, rf"^--logdir '{path}' cannot be created: "
                                  rf'{link}; expected a directory \(create the target, or '
                                  r'remove the link\)$'):
        cli.check_writable_dir(path, 'logdir')
      with self.assertRaisesRegex(tf_mp.TfMpError, rf'^checkpoint directory .* cannot be '
                                  rf'created: {link}'):
        tf_mp.TrainingCheckpoints(path, tf_mp.Trainer(tf_mp.build_model(None)))


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


class StartUpTest(parameterized.TestCase):
  """Signals before training, and a device check that needs a fresh TensorFlow."""

  def test_ctrl_c_during_the_imports_is_one_line(self):
    # A SIGINT 0.2 s after start printed a 25-line KeyboardInterrupt traceback
    # from importlib. Here it arrives, deterministically, right after
    # tf_mp.cli (a program's first import) and during the next import. Python
    # keeps SIGINT ignored when it starts so (a shell's background job, e.g. a
    # CI runner's): the child restores the terminal's default first.
    result = run(['-c', 'import signal; signal.signal(signal.SIGINT, '
                  "signal.default_int_handler); import sys; sys.argv[0] = 'tutorial.py'; "
                  'from tf_mp import cli; import os, time; '
                  'os.kill(os.getpid(), signal.SIGINT); time.sleep(30); import tensorflow'])
    self.assertEqual(result.returncode, 130, result.stderr)
    self.assertEqual(result.stderr, 'tutorial.py: stopped by SIGINT while starting; '
                     'nothing was run\n')

  def test_a_second_signal_while_exiting_keeps_the_first_ones_status(self):
    # The second signal arrives after the stop line, during the interpreter's
    # shutdown (an atexit hook stands in for TensorFlow's slow teardown): it
    # killed the program by that signal, status -15 instead of 130.
    result = run(['-c', "import sys; sys.argv[0] = 'tutorial.py'; from tf_mp import cli; "
                  'import atexit, os, signal, time; '
                  'atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), '
                  'time.sleep(0.5))); '
                  'cli.run(lambda argv: os.kill(os.getpid(), signal.SIGINT))'])
    self.assertEqual(result.returncode, 130, result.stderr)
    self.assertEqual(result.stderr, 'tutorial.py: stopped by SIGINT\n')

  def test_a_signal_is_not_swallowed_by_except_exception(self):
    # `Stopped` used to be an Exception: TensorFlow code that catches
    # Exception (in tf.saved_model.save, say) took a SIGTERM, and the program
    # went on to exit 0 with the export written.
    result = run(['-c', "import sys; sys.argv = ['tutorial.py']; from tf_mp import cli\n"
                  'def check():\n'
                  '  import os, signal, time\n'
                  '  try:\n'
                  '    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n'
                  '  except Exception:\n'
                  '    pass\n'
                  '  os._exit(0)\n'
                  'cli.run(lambda argv: 0, None, check)'])
    self.assertEqual(result.returncode, 143, result.stderr)
    self.assertEqual(result.stderr, 'tutorial.py: stopped by SIGTERM\n')

  def test_negative_cpu_index_is_one_line(self):
    # cpu:-1 asked TensorFlow for 0 logical CPUs: a NotFoundError traceback.
    result = run(PIPELINE, '--devices=cpu:-1', '--steps', '1', '--report_steps', '0')
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertEqual(result.stdout, '')
    lines = error_lines(result.stderr)
    self.assertLen(lines, 1, result.stderr)
    self.assertEqual(lines[0], "pipeline.py: error: device name 'cpu:-1' has no device "
                     'index >= 0; expected e.g. "cpu:0" or "/device:GPU:1"')


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
