"""tools/run_local_cluster.py: two tutorial workers on 127.0.0.1, the chief's lines only."""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, 'tools', 'run_local_cluster.py')

# A stand-in worker: ignores SIGTERM (as a worker blocked in a collective
# does), writes its pid; worker 1, once worker 0 is up, interrupts the launcher.
FAKE_WORKER = textwrap.dedent('''\
    import json, os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    index = json.loads(os.environ['TF_CONFIG'])['task']['index']
    directory = sys.argv[-1]
    with open(os.path.join(directory, f'pid_{index}.tmp'), 'w') as f:
      f.write(str(os.getpid()))
    os.rename(os.path.join(directory, f'pid_{index}.tmp'), os.path.join(directory, f'pid_{index}'))
    while index == 1 and not os.path.exists(os.path.join(directory, 'pid_0')):
      time.sleep(0.05)
    if index == 1:
      os.kill(os.getppid(), signal.SIGINT)
    time.sleep(120)
''')


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


  def test_argument_errors_are_one_line_and_status_1(self):
    for args, message in (
        (['--workers', '0'], r'argument --workers: 0 is not in \[1, \d+\] \(4 per CPU core, '),
        (['--workers', '100000'], r'argument --workers: 100000 is not in \[1, '),
        (['--workers', 'abc'], r"argument --workers: 'abc' is not an integer"),
        (['--timeout', 'nan'], r'argument --timeout: nan is not a finite number of seconds > 0'),
        (['--timeout', '-1'], r'argument --timeout: -1 is not a finite number of seconds > 0'),
        (['--grace_seconds', 'nan'], r'argument --grace_seconds: nan is not a finite number '
         r'of seconds >= 0'),
        (['--grace_seconds', '-1'], r'argument --grace_seconds: -1 is not a finite'),
        (['--log_dir', '/proc/nope'], r"--log_dir '/proc/nope' cannot be created"),
        (['--log_dir', LAUNCHER], r'--log_dir .* exists and is not a directory'),
        # Each worker trained alone, silently, before.
        (['--', '--strategy', 'none'], r"--strategy 'none' among the tutorial flags; the "
         r'workers always run --strategy multi_worker \(leave the flag out\)$')):
      result = launch(*args)
      self.assertEqual(result.returncode, 1, (args, result.stderr))
      self.assertEqual(result.stdout, '')
      self.assertRegex(result.stderr, rf'^run_local_cluster: error: {message}.*\n$')
      self.assertLen(result.stderr.splitlines(), 1, result.stderr)

  def test_workers_stopped_during_their_start_up_print_nothing(self):
    # They got SIGINT, which Python's start-up turned into a "Fatal Python
    # error" and a KeyboardInterrupt traceback on the chief's terminal.
    log_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, log_dir, ignore_errors=True)
    result = launch('--timeout', '1e-9', '--log_dir', log_dir, '--', '--steps', '100')
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertEqual(result.stderr, 'run_local_cluster: not done after --timeout 1e-09 s; '
                     f'stopped all workers (logs in {log_dir})\n')

  def test_interrupt_stops_then_kills_and_reaps_every_worker(self):
    spec = importlib.util.spec_from_file_location('run_local_cluster', LAUNCHER)
    tool = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(LAUNCHER))  # Its benchlib.
    try:
      spec.loader.exec_module(tool)
    finally:
      sys.path.remove(os.path.dirname(LAUNCHER))
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    tool.TUTORIAL = os.path.join(directory, 'worker.py')
    with open(tool.TUTORIAL, 'w') as f:
      f.write(FAKE_WORKER)
    status = tool.main(['--workers', '2', '--grace_seconds', '0.5', '--log_dir', directory,
                        '--', directory])
    self.assertEqual(status, 130)
    for index in (0, 1):
      with open(os.path.join(directory, f'pid_{index}')) as f:
        pid = int(f.read())
      with self.assertRaises(ProcessLookupError, msg=f'worker {index} still exists'):
        os.kill(pid, 0)  # Gone, and reaped (a zombie would still answer).

  def test_workers_do_not_outlive_a_launcher_killed_by_sigkill(self):
    # Worker 1 kills the launcher with SIGKILL once worker 0 is up; before,
    # both workers (in their own sessions) trained on with no one to stop them.
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    worker = os.path.join(directory, 'worker.py')
    with open(worker, 'w') as f:
      f.write(FAKE_WORKER.replace('signal.SIGTERM, signal.SIG_IGN', 'signal.SIGTERM, '
                                  'signal.SIG_DFL').replace('os.getppid(), signal.SIGINT',
                                                            'os.getppid(), signal.SIGKILL'))
    script = textwrap.dedent(f'''\
        import importlib.util, sys
        sys.path.insert(0, {os.path.dirname(LAUNCHER)!r})
        spec = importlib.util.spec_from_file_location('tool', {LAUNCHER!r})
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        tool.TUTORIAL = {worker!r}
        tool.main(['--workers', '2', '--log_dir', {directory!r}, '--', {directory!r}])
        ''')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    self.assertEqual(result.returncode, -9, result.stderr)
    for index in (0, 1):
      with open(os.path.join(directory, f'pid_{index}')) as f:
        pid = int(f.read())
      for _ in range(600):  # Bounded: the SIGTERM is immediate; 60 s at most.
        try:
          with open(f'/proc/{pid}/stat') as f:
            if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
              break  # Exited; only waiting for init to reap it.
        except FileNotFoundError:
          break
        time.sleep(0.1)
      else:
        os.kill(pid, signal.SIGKILL)
        self.fail(f'worker {index} (pid {pid}) still running after its launcher was killed')


if __name__ == '__main__':
  absltest.main()
