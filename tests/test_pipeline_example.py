"""End-to-end runs of examples/pipeline.py in subprocesses (it sets up its own devices)."""

import pathlib
import re

from absl.testing import parameterized
import tensorflow as tf

from testing import run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'examples' / 'pipeline.py'


def _run(*flags):
  return run_python([str(SCRIPT), *flags], timeout=240)


def _stderr_lines(result):
  # TensorFlow prints some C++ start-up lines regardless of the log level.
  return [line for line in result.stderr.splitlines()
          if line.strip() and not re.match(r'^[IWE]\d{4} |^WARNING: All log messages', line)]


class PipelineExampleTest(tf.test.TestCase, parameterized.TestCase):

  def test_trains_and_prints_the_reports(self):
    result = _run('--steps=21', '--log_every=10', '--micro_batches=4', '--remat',
                  '--devices=cpu:0,cpu:1,cpu:2', '--report_steps=1')
    self.assertEqual(0, result.returncode, result.stderr)
    out = result.stdout
    steps = re.findall(r'^Step: (\d+) Loss: (\S+)$', out, re.MULTILINE)
    self.assertEqual(['0', '10', '20'], [s for s, _ in steps], out)
    losses = [float(loss) for _, loss in steps]
    self.assertLess(losses[-1], losses[0], out)
    for stage, device in (('stage_1', 'cpu:0'), ('stage_2', 'cpu:1'), ('stage_3', 'cpu:2')):
      self.assertRegex(out, rf'{stage}\s+{device}\s+{device}\s+{device}\s')
    self.assertIn('Stage balance', out)
    self.assertIn('suggested split', out)
    self.assertRegex(out, r'measured bubble \(mean idle fraction\): 0\.\d+\s+'
                     r'GPipe \(K-1\)/\(M\+K-1\): 0\.333')

  def test_bad_batch_is_one_line_and_exit_1(self):
    result = _run('--steps=5', '--batch_size=30', '--micro_batches=4', '--report_steps=0')
    self.assertEqual(1, result.returncode, result.stdout + result.stderr)
    lines = _stderr_lines(result)
    self.assertLen(lines, 1, result.stderr)
    self.assertRegex(lines[0], r'^pipeline\.py: error: batch size 30 does not split into '
                     r'num_micro_batches=4')
    self.assertNotIn('Step:', result.stdout)


if __name__ == '__main__':
  tf.test.main()
