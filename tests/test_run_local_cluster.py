"""tools/run_local_cluster.py: two tutorial workers on 127.0.0.1, the chief's lines only."""

import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, 'tools', 'run_local_cluster.py')


def launch(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, LAUNCHER, *args], capture_output=True, text=True,
                        timeout=timeout, env=env, cwd=ROOT)


class RunLocalClusterTest(absltest.TestCase):

  def test_two_workers_train_and_only_the_chief_prints(self):
    log_dir = tempfile.mkdtemp()
    result = launch('--workers', '2', '--timeout', '280', '--log_dir', log_dir, '--',
                    '--steps', '11', '--log_every', '10', '--devices', 'cpu:0,cpu:1,cpu:2')
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    out = result.stdout
    self.assertIn('task worker:0 of 2 workers', out)
    self.assertNotIn('task worker:1', out)
    # Each line once: the other worker's lines are in its log file, not here.
    self.assertEqual(re.findall(r'^Step: (\d+) Loss: \S+$', out, re.M), ['0', '10'])
    self.assertLen(re.findall(r'^Done: 11 steps', out, re.M), 1)
    with open(os.path.join(log_dir, 'worker_1.log')) as f:
      worker_1 = f.read()
    self.assertIn('task worker:1 of 2 workers', worker_1)
    self.assertEqual(re.findall(r'^Step: (\d+) Loss: \S+$', worker_1, re.M), ['0', '10'])

  def test_a_failing_worker_fails_the_run(self):
    result = launch('--workers', '2', '--', '--steps', '-1')
    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
    self.assertRegex(result.stderr, r'run_local_cluster: worker \d failed with exit status 1; '
                     r'stopped the others')
    self.assertIn('tutorial.py: error: flag --steps=-1: -1 is not a positive integer',
                  result.stderr)


if __name__ == '__main__':
  absltest.main()
