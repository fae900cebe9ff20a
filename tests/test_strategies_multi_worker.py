"""multi_worker: two worker processes on 127.0.0.1, each with its own 3 logical CPUs.

Each test bounds every wait and kills its processes in `finally`, so a hang
fails the test instead of the suite, and nothing is left running.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp.distribute.cluster import free_loopback_ports as free_ports
from testing import assert_weights_match, build_model_in, draw_seed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'strategy_worker.py')
START_AND_TRAIN_S = 240  # Bound on one run of a worker (start-up included).
COLLECTIVE_TIMEOUT_S = 5
# Workers against one process on 'none' (one matmul over the whole batch):
# over 60 seeds (2141547600-2141547659, 100 steps, tools/compare_mirrored_seeds.py,
# 2026-11-28), the largest relative loss difference at any
# step was 1.4e-4 (seed 2141547608, whose weights differ by up to 2.3e-3 after
# a ReLU flip), the median 2.2e-7.
LOSS_RTOL = 1e-3


class Cluster:
  """Starts the workers of one cluster; `stop()` kills whatever still runs."""

  def __init__(self, ports, args, out_dir):
    self.ports, self.args, self.out_dir = ports, args, out_dir
    self.processes = []

  def start(self, run: str):
    addresses = [f'127.0.0.1:{port}' for port in self.ports]
    self.processes = []
    for index in range(len(self.ports)):
      config = {'cluster': {'worker': addresses}, 'task': {'type': 'worker', 'index': index}}
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_CONFIG=json.dumps(config))
      stderr = open(os.path.join(self.out_dir, f'{run}_{index}.err'), 'w')
      self.processes.append(subprocess.Popen(
          [sys.executable, WORKER, '--strategy', 'multi_worker',
           f'--weights_out={os.path.join(self.out_dir, f"{run}_{index}.npz")}',
           *self.args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env))
      stderr.close()
    return self.processes

  def stderr(self, run: str, index: int) -> str:
    with open(os.path.join(self.out_dir, f'{run}_{index}.err')) as f:
      # Without TensorFlow's start-up lines and the start-up lines of every
      # worker: the exposure warning and (a slow peer) the waiting line, which
      # tests/test_security.py checks.
      return '\n'.join(l for l in f.read().splitlines()
                       if not l.startswith(('I0000', 'WARNING: All log',
                                            'tf_mp: warning:', 'tf_mp: waiting')))

  def stop(self):
    for process in self.processes:
      if process.poll() is None:
        process.kill()
      process.wait()
      process.stdout.close()


class MultiWorkerTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def single_process_run(self, seed: int, steps: int, kind: str):
    """The same global batches in this one process: 'none', or 'mirrored' 2x3.

    Returns `(weights, losses)`, losses by step. 'mirrored' splits each global
    batch between two replicas exactly as the two workers do (rows 0-31 and
    32-63, gradients summed), so it must agree bit for bit. 'none' sums the
    64 rows in one matmul: equal up to float32 rounding, which Adam can
    amplify in single weights (see tests/testing.py), so against 'none' the
    test compares the loss of every logged step instead (`LOSS_RTOL`).
    """
    x, y = tf_mp.synthetic_data(seed)
    devices = {'none': 'cpu:0,cpu:1,cpu:2',
               'mirrored': 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'}[kind]
    layout = tf_mp.distribute.create_strategy(kind, devices)
    trainer = tf_mp.Trainer(build_model_in(layout, tf_mp.ModelConfig(seed=seed)),
                            strategy=layout)
    result = trainer.fit(x, y, steps=steps, batch_size=64, log_every=1)
    weights = {v.name: v.numpy() for v in trainer.model.trainable_variables}
    return weights, dict(result.logged)

  def assert_workers_match(self, run: str, seed: int, steps: int, out: str):
    weights = [np.load(os.path.join(self.dir, f'{run}_{i}.npz')) for i in range(2)]
    replicated, _ = self.single_process_run(seed, steps, 'mirrored')
    for name in replicated:
      self.assertAllEqual(weights[0][name], weights[1][name], msg=f'{name}, seed {seed}')
      self.assertAllEqual(weights[0][name], replicated[name], msg=f'{name}, seed {seed}')
    _, losses = self.single_process_run(seed, steps, 'none')
    logged = {int(step): float(loss)
              for step, loss in re.findall(r'^Step: (\d+) Loss: (\S+)$', out, re.M)}
    self.assertNotEmpty(logged)
    for step, loss in logged.items():
      self.assertAllClose(loss, losses[step], rtol=LOSS_RTOL, atol=0,
                          msg=f'step {step}, seed {seed}')

  def test_two_workers_equal_one_process_on_the_combined_batches(self):
    seed = draw_seed()
    cluster = Cluster(free_ports(2), ['--steps', '100', '--batch_size', '64',
                                      '--seed', str(seed), '--log_every', '10'], self.dir)
    outputs = []
    try:
      processes = cluster.start('run')
      for index, process in enumerate(processes):
        process.wait(timeout=START_AND_TRAIN_S)
        self.assertEqual(process.returncode, 0, cluster.stderr('run', index))
        outputs.append(process.stdout.read())
        self.assertIn('2 replica(s) in sync', outputs[-1])
        self.assertIn('DONE', outputs[-1])
    finally:
      cluster.stop()
    self.assert_workers_match('run', seed, 100, outputs[0])

  def test_dead_worker_stops_the_survivor_then_all_resume(self):
    seed = draw_seed()
    checkpoints = os.path.join(self.dir, 'ckpt')
    cluster = Cluster(
        free_ports(2),
        ['--steps', '120', '--batch_size', '64', '--seed', str(seed), '--log_every', '10',
         '--checkpoint_dir', checkpoints, '--checkpoint_every', '20',
         f'--collective_timeout={COLLECTIVE_TIMEOUT_S}'], self.dir)
    try:
      survivor, victim = cluster.start('crash')
      for line in victim.stdout:
        if line.startswith('Step: 40 '):
          break  # ckpt-40 was written before this line.
      victim.send_signal(signal.SIGKILL)
      victim.wait(timeout=30)
      # Bounded: the collective timeout plus time to report, never a hang.
      survivor.wait(timeout=COLLECTIVE_TIMEOUT_S + 90)
      self.assertNotEqual(survivor.returncode, 0)
      lines = cluster.stderr('crash', 0).splitlines()
      self.assertLen(lines, 1, lines)
      self.assertStartsWith(lines[0], 'strategy_worker.py: error: training stopped')
      self.assertIn('a worker is down or unreachable', lines[0])
      self.assertIn(f'within the {COLLECTIVE_TIMEOUT_S}s collective timeout', lines[0])
      self.assertTrue(tf.train.latest_checkpoint(checkpoints))
      self.assertNotIn('DONE', survivor.stdout.read())

      resumed = []
      for index, process in enumerate(cluster.start('resume')):
        process.wait(timeout=START_AND_TRAIN_S)
        out = process.stdout.read()
        resumed.append(out)
        self.assertEqual(process.returncode, 0, cluster.stderr('resume', index))
        self.assertRegex(out, r'Resumed from .*ckpt-(\d+) at step \1\n')
        self.assertNotIn('Step: 0 ', out)
    finally:
      cluster.stop()
    self.assert_workers_match('resume', seed, 120, resumed[0])
    self.assertEqual(os.listdir(checkpoints).count('.worker_1_temp'), 0)

  def test_sigterm_during_training_ends_each_worker_in_one_line(self):
    # Starting the strategy installs TensorFlow's C++ SIGTERM handler, which
    # only records the signal: the workers trained on as if nothing happened.
    cluster = Cluster(free_ports(2), ['--steps', '1000000', '--log_every', '10',
                                      f'--collective_timeout={COLLECTIVE_TIMEOUT_S}'],
                      self.dir)
    try:
      workers = cluster.start('term')
      for line in workers[0].stdout:
        if line.startswith('Step: 10 '):
          break
      for process in workers:
        process.send_signal(signal.SIGTERM)
      for index, process in enumerate(workers):
        process.wait(timeout=COLLECTIVE_TIMEOUT_S + 90)
        self.assertEqual(process.returncode, 143, cluster.stderr('term', index))
        self.assertEqual(cluster.stderr('term', index).splitlines(),
                         ['strategy_worker.py: stopped by SIGTERM'])
    finally:
      cluster.stop()


if __name__ == '__main__':
  tf.test.main()
