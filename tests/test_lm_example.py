"""examples/tiny_lm.py end to end, in subprocesses: its lines, checkpoints, one-line errors."""

import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tf_mp import lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'examples', 'tiny_lm.py')
TINY = ['--d_model', '12', '--num_heads', '3', '--num_blocks', '1',
        '--mlp_units', '24', '--context', '16', '--batch_size', '4']


def run_lm(*args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True,
                        text=True, timeout=timeout, env=env, cwd=ROOT)


def error_lines(stderr: str) -> list:
  return [line for line in stderr.splitlines()
          if line.strip() and 'port.cc' not in line and not line.startswith('WARNING: All log')]


class TinyLmExampleTest(absltest.TestCase):

  def test_trains_evaluates_samples_and_checkpoints(self):
    text = lm.builtin_corpus()[:4000]
    path = os.path.join(tempfile.mkdtemp(), 'small.txt')
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
    logdir = tempfile.mkdtemp()
    common = ['--text', path, *TINY, '--devices', 'cpu:0,cpu:1,cpu:2',
              '--log_every', '2', '--eval_every', '3', '--sample_length', '25',
              '--prompt', 'The ', '--logdir', logdir]
    first = run_lm(*common, '--steps', '4')
    self.assertEqual(first.returncode, 0, first.stderr)
    out = first.stdout
    self.assertIn('T=3', out)
    self.assertEqual(re.findall(r'^Step: (\d+) Loss: \S+$', out, re.M), ['0', '2'])
    self.assertEqual(re.findall(r'^Validation: step (\d+) loss \S+ nats, \S+ bits per '
                                r'character$', out, re.M), ['3', '4'])
    header = "Sample (prompt 'The ', temperature 0.8):\n"
    self.assertIn(header, out)
    sample = out.split(header, 1)[1][:-1]  # print() adds one newline.
    self.assertTrue(sample.startswith('The '), out)
    self.assertLen(sample, 4 + 25)
    self.assertContainsSubset(set(sample), set(text))

    # Resuming is tested in-process (test_lm.py); here the checkpoints exist.
    self.assertTrue(any(name.startswith('ckpt-4') for name in os.listdir(logdir)))
    self.assertIn('tiny_lm.json', os.listdir(logdir))
    # --sample_length 0, which the flag allows, means no sample (it was refused).
    again = run_lm(*common, '--steps', '4', '--sample_length', '0')
    self.assertEqual(again.returncode, 0, again.stderr)
    self.assertEqual(again.stdout.splitlines()[-1], f'Resumed from step 4 ({logdir})')

  def test_bad_inputs_are_one_line_errors(self):
    binary = os.path.join(tempfile.mkdtemp(), 'binary.txt')
    with open(binary, 'wb') as f:
      f.write(b'\x00\x01\x02text')
    result = run_lm('--text', binary)
    self.assertEqual(result.returncode, 1)
    lines = error_lines(result.stderr)
    self.assertLen(lines, 1, result.stderr)
    self.assertRegex(lines[0], r'^tiny_lm\.py: error: text file .* is binary')
    self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
  absltest.main()
