"""examples/tutorial.py end to end, in subprocesses: the document's lines, exports, clear errors."""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, 'examples', 'tutorial.py')
STEP_LINE = re.compile(r'^Step: (\d+) Loss: (\S+)$')


def run_tutorial(*args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, TUTORIAL, *args], capture_output=True,
                        text=True, timeout=timeout, env=env, cwd=ROOT)


class TutorialTest(tf.test.TestCase):

  def test_prints_the_documents_lines_and_exports(self):
    with tempfile.TemporaryDirectory() as tmp:
      export_dir = os.path.join(tmp, 'model')
      logdir = os.path.join(tmp, 'logs')
      proc = run_tutorial('--steps', '301', '--log_every', '100', '--seed', '3',
                          '--devices', 'cpu:0,cpu:1,cpu:2', '--logdir', logdir,
                          '--export_dir', export_dir)
      self.assertEqual(proc.returncode, 0, proc.stderr)
      lines = proc.stdout.splitlines()
      # The placement report comes first, read from TensorFlow.
      self.assertEqual(lines[0], 'Placement')
      for k in (1, 2, 3):
        row = next(l for l in lines if l.startswith(f'sub_model_{k} '))
        self.assertEqual(row.split()[1:4], [f'cpu:{k - 1}'] * 3, row)
      steps = [STEP_LINE.match(l) for l in lines if l.startswith('Step:')]
      self.assertTrue(all(steps), lines)
      self.assertEqual([int(m.group(1)) for m in steps], [0, 100, 200, 300])
      losses = [float(m.group(2)) for m in steps]
      # print('Step:', step, 'Loss:', np.float32) formatting, as in the document.
      self.assertEqual(steps[0].group(2), str(np.float32(steps[0].group(2))))
      self.assertGreater(losses[0], 2.0)
      self.assertLess(losses[-1], losses[0] / 10)
      self.assertRegex(lines[-2], r'^Done: 301 steps, final loss \S+, [\d.]+ steps/s$')
      self.assertRegex(lines[-1], r'^SavedModel written to ')
      serve = tf.saved_model.load(export_dir).signatures['serving_default']
      logits = serve(features=tf.zeros([3, 128]))['logits']
      self.assertEqual(logits.shape, (3, 10))
      events = tf.compat.v1.train.summary_iterator
      tags = {v.tag for f in os.listdir(logdir)
              for e in events(os.path.join(logdir, f)) for v in e.summary.value}
      self.assertEqual(tags, {'loss', 'steps_per_second'})

  def test_bad_device_and_bad_data_are_one_line_errors(self):
    proc = run_tutorial('--devices', 'gpu:7', '--steps', '5')
    self.assertEqual(proc.returncode, 1)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "tutorial.py: error: device 'gpu:7' does not exist; this "
                     'machine has: cpu:0')
    self.assertNotIn('Traceback', proc.stderr)
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'data.npz')
      x = np.zeros((8, 128), np.float32)
      x[2, 7] = np.nan
      np.savez(path, x=x, y=np.zeros(8, np.int32))
      proc = run_tutorial('--data', path, '--steps', '5')
      self.assertEqual(proc.returncode, 1)
      self.assertNotIn('Traceback', proc.stderr)
      self.assertNotIn('Step:', proc.stdout)  # Checked before training starts.
      self.assertRegex(proc.stderr.strip().splitlines()[-1],
                       r"error: data file '.*data.npz': 'x' contains a "
                       r'non-finite value \(nan\) at row 2, column 7')

  def test_existing_export_dir_is_not_overwritten(self):
    with tempfile.TemporaryDirectory() as tmp:
      precious = os.path.join(tmp, 'precious')
      with open(precious, 'w') as f:
        f.write('old')
      proc = run_tutorial('--export_dir', tmp, '--steps', '5')
      self.assertEqual(proc.returncode, 1)
      self.assertNotIn('Step:', proc.stdout)
      self.assertRegex(proc.stderr.strip().splitlines()[-1],
                       'error: export directory .* already exists and is not empty')
      with open(precious) as f:
        self.assertEqual(f.read(), 'old')


if __name__ == '__main__':
  tf.test.main()
