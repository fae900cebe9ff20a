"""The port against the document's program run as TF1 code: numbers, placement, and the oracle's teeth.

One run of `tools/reference/tf1_program.py` (a subprocess: graph mode is
process-global) on fresh random data records the initial checkpoint, logits,
gradients, one Adam step and 200 losses; every test compares the port, loaded
from that checkpoint with `tf_mp.compat.v1.load_tf1_checkpoint`, against that record.
Tolerances are `tf1_oracle.TOLERANCES` (the issue's).
"""

import os
import re
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'tools', 'reference'))
import tf1_oracle  # pylint: disable=g-import-not-at-top,wrong-import-position


def _device_indices(devices) -> set:
  return {tf.DeviceSpec.from_string(d).device_index or 0 for d in devices}


class OracleTest(parameterized.TestCase):
  """Shares one TF1 run and one comparison of the real port across the tests."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.seed = draw_seed()
    cls.work_dir = tempfile.mkdtemp(prefix='tf1_oracle_')
    x, y = tf1_oracle.random_data(cls.seed)
    cls.reference = tf1_oracle.run_tf1_program(cls.work_dir, x, y, steps=200)
    cls.comparison = tf1_oracle.compare(cls.reference)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.work_dir, ignore_errors=True)
    super().tearDownClass()

  def context(self, comparison=None) -> str:
    comparison = comparison or self.comparison
    return f'data seed {self.seed}; {comparison.profile()}'

  def test_forward_logits(self):
    self.assertLessEqual(self.comparison.forward,
                         tf1_oracle.TOLERANCES['forward'], self.context())

  def test_gradients_per_variable(self):
    self.assertLen(self.comparison.gradients, 14)
    for name, relative in self.comparison.gradients.items():
      self.assertLessEqual(relative, tf1_oracle.TOLERANCES['gradients'],
                           f'{name}: {self.context()}')

  def test_one_adam_step_per_variable(self):
    self.assertLen(self.comparison.one_step, 14)
    for name, relative in self.comparison.one_step.items():
      self.assertLessEqual(relative, tf1_oracle.TOLERANCES['one_step'],
                           f'{name}: {self.context()}')

  @parameterized.named_parameters(
      ('steps_0_10', 'loss_0_10'),
      ('steps_0_99', 'loss_0_99'),
      ('all_200_steps', 'loss_all'),
  )
  def test_training_losses(self, check):
    self.assertLen(self.comparison.losses, 200)
    self.assertLessEqual(self.comparison.max_differences()[check],
                         tf1_oracle.TOLERANCES[check], self.context())

  def test_training_learns(self):
    # Guards against a vacuous comparison of two programs that do nothing.
    losses = self.reference.losses
    self.assertLess(losses[-20:].mean(), 0.8 * losses[:20].mean(),
                    f'data seed {self.seed}; TF1 losses {losses[::20]}')

  def test_tf1_program_prints_the_documents_lines(self):
    lines = re.findall(r'^Step: (\d+) Loss: (\S+)$', self.reference.stdout, re.M)
    self.assertEqual([int(step) for step, _ in lines], [0, 100])
    for step, loss in lines:
      self.assertEqual(np.float32(loss), self.reference.losses[int(step)])

  @parameterized.named_parameters(('sub_model_1', 1), ('sub_model_2', 2),
                                  ('sub_model_3', 3))
  def test_same_device_index_in_both_programs(self, k):
    scope = f'sub_model_{k}'
    tf1_devices = set(self.reference.tf1_device_indices(scope))
    model, trainer = tf1_oracle.make_port()
    port_devices = _device_indices(
        tf_mp.placement_report(model, trainer)[scope].op_devices)
    self.assertEqual(tf1_devices, {k - 1})
    self.assertEqual(port_devices, tf1_devices)
    # Where the TF1 runtime really ran the forward ops (Send/Recv left out).
    self.assertEqual(set(self.reference.tf1_device_indices(scope, placed=True)),
                     {k - 1})

  @parameterized.named_parameters(
      (name, name) for name in tf1_oracle.DEVIATIONS)
  def test_the_oracle_catches_a_deviating_port(self, name):
    port, must_fail = tf1_oracle.DEVIATIONS[name]
    comparison = tf1_oracle.compare(self.reference, port)
    failures = comparison.failures()
    for check in must_fail:
      self.assertIn(check, failures,
                    f'{name} passed {check}: {self.context(comparison)}')


class BadFlagsTest(parameterized.TestCase):
  """The oracle's programs turn a user's mistake into one line and exit status 1."""

  @parameterized.named_parameters(
      ('tf1_program_missing_data', tf1_oracle.PROGRAM,
       ['--data', 'no_such_file.npz', '--steps', '1'],
       "tf1_program.py: data file 'no_such_file.npz' does not exist"),
      ('oracle_report_no_runs',
       os.path.join(tf1_oracle.REPO_ROOT, 'tools', 'oracle_report.py'),
       ['--runs', '0'], 'oracle_report.py: --runs must be >= 1, got 0'),
      ('oracle_report_unknown_thread_mode',
       os.path.join(tf1_oracle.REPO_ROOT, 'tools', 'oracle_report.py'),
       ['--tf1_pools', 'same'], "oracle_report.py: TF_MP_CPU_THREADS='fastest'; expected "
       'one of exact, tensorflow, matched', {'TF_MP_CPU_THREADS': 'fastest'}),
  )
  def test_one_line_error(self, program, args, message, env=None):
    result = subprocess.run([sys.executable, program] + args,
                            cwd=tempfile.gettempdir(),
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **(env or {})),
                            capture_output=True, text=True, timeout=300,
                            check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertNotIn('Traceback', result.stderr)
    self.assertStartsWith(result.stderr.strip().splitlines()[-1], message)


if __name__ == '__main__':
  absltest.main()
