"""The trust boundary (docs/security.md): the cluster's exposure, said and
checked against the kernel; waiting for peers bounded and interruptible; no
input ever unpickled.

The process tests start tests/strategy_worker.py on 127.0.0.1 with free ports,
wait a bounded time and kill whatever still runs.
"""

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from tf_mp.distribute.cluster import free_loopback_ports as free_ports
from tf_mp.distribute import cluster_security
from tf_mp import file_trust
from tf_mp.distribute import peer_wait
from tf_mp.ops.concat import OpLibrary

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, 'strategy_worker.py')
PROCESS_S = 180  # Bound on one worker process (TensorFlow's start-up included).


def tf_config(ports, index: int) -> str:
  return json.dumps({'cluster': {'worker': [f'127.0.0.1:{p}' for p in ports]},
                     'task': {'type': 'worker', 'index': index}})


def task_for(ports, index: int = 0):
  return tf_mp.distribute.parse_tf_config(tf_config(ports, index))


def program_lines(text: str) -> list:
  """stderr without TensorFlow's own start-up lines."""
  return [l for l in text.splitlines()
          if l and not l.startswith(('I0000', 'WARNING: All log'))]


class Worker:
  """One tests/strategy_worker.py process; stderr goes to a file."""

  def __init__(self, ports, index, out_dir, *args, name=None):
    self.err_path = os.path.join(out_dir, f'{name or index}.err')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_CONFIG=tf_config(ports, index),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    with open(self.err_path, 'w') as err:
      self.process = subprocess.Popen(
          [sys.executable, WORKER, '--strategy', 'multi_worker', *args],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
          env=env)

  def stderr_lines(self) -> list:
    with open(self.err_path) as f:
      return program_lines(f.read())

  def wait_for_stderr(self, prefix: str, timeout: float) -> str:
    """Polls stderr for a line starting with `prefix` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and self.process.poll() is None:
      for line in self.stderr_lines():
        if line.startswith(prefix):
          return line
      time.sleep(0.2)
    raise AssertionError(f'no {prefix!r} line within {timeout}s: {self.stderr_lines()}')

  def stop(self):
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()
    self.process.stdin.close()
    self.process.stdout.close()


class ExposureLineTest(tf.test.TestCase):

  def test_names_port_interfaces_and_trust(self):
    line = cluster_security.exposure_line(task_for([2222, 2223]))
    self.assertNotIn('\n', line)
    for part in ('port 2222', 'all network interfaces', '127.0.0.1:2222',
                 'unauthenticated', 'trusted network', 'docs/security.md'):
      self.assertIn(part, line)

  def test_listening_sockets_reads_the_kernel(self):
    with socket.socket() as loop, socket.socket(socket.AF_INET6) as wild:
      loop.bind(('127.0.0.1', 0))
      loop.listen(1)
      wild.bind(('::', 0))
      wild.listen(1)
      found = {s.port: s for s in cluster_security.listening_sockets(os.getpid())}
      loop_port, wild_port = loop.getsockname()[1], wild.getsockname()[1]
    self.assertEqual(found[loop_port].host, '127.0.0.1')
    self.assertTrue(found[loop_port].is_loopback)
    self.assertFalse(found[loop_port].is_wildcard)
    self.assertEqual(found[wild_port].host, '::')
    self.assertTrue(found[wild_port].is_wildcard)


class PeerWaitInProcessTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('negative', -1), ('text', '10'), ('nan', float('nan')), ('inf', float('inf')),
      ('bool', True))
  def test_bad_timeout_is_one_line(self, value):
    with self.assertRaisesRegex(tf_mp.TfMpError, r'peer timeout must be .* got '):
      peer_wait.check_peer_timeout(value)

  def test_bad_timeout_refused_by_create_strategy_before_anything(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'peer timeout'):
      tf_mp.distribute.create_strategy('multi_worker', tf_config=tf_config([2222, 2223], 0),
                            peer_timeout=-5)

  def test_returns_once_every_peer_listens(self):
    with socket.socket() as peer:
      peer.bind(('127.0.0.1', 0))
      peer.listen(4)
      own = free_ports(1)[0]
      remaining = peer_wait.wait_for_peers(task_for([own, peer.getsockname()[1]]), 30)
    self.assertGreater(remaining, 0)

  def test_missing_peer_is_announced_then_given_up(self):
    own, missing = free_ports(2)
    stream = _Lines()
    with self.assertRaises(tf_mp.TfMpError) as raised:
      peer_wait.wait_for_peers(task_for([own, missing]), 1.0, announce_after=0.2,
                               stream=stream)
    self.assertLen(stream.lines, 1)
    self.assertStartsWith(stream.lines[0], 'tf_mp: waiting for 1 of 1 other worker(s) '
                          f'to start: worker:1 at 127.0.0.1:{missing} (giving up after 1s')
    self.assertStartsWith(str(raised.exception), 'gave up after 1s waiting for 1 of 1 ')
    self.assertIn(f'worker:1 at 127.0.0.1:{missing} never answered', str(raised.exception))

  @parameterized.named_parameters(('sigterm', signal.SIGTERM, 143),
                                  ('sigint', signal.SIGINT, 130))
  def test_signal_while_waiting_raises_with_exit_status(self, signum, status):
    own, missing = free_ports(2)
    before = signal.getsignal(signum)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signum))
    timer.start()
    self.addCleanup(timer.cancel)
    with self.assertRaises(peer_wait.PeerWaitInterrupted) as raised:
      peer_wait.wait_for_peers(task_for([own, missing]), 600, stream=_Lines())
    self.assertEqual(raised.exception.exit_status, status)
    self.assertEqual(str(raised.exception),
                     f'interrupted by {signal.Signals(signum).name} while waiting for '
                     f'the other workers (worker:1 at 127.0.0.1:{missing}); nothing '
                     'was started')
    self.assertIs(signal.getsignal(signum), before)  # Handlers restored.

  def test_busy_own_port_is_one_line(self):
    with socket.socket() as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen(1)
      port = taken.getsockname()[1]
      with self.assertRaisesRegex(tf_mp.TfMpError,
                                  f'port {port} of this worker .* already in use'):
        peer_wait.wait_for_peers(task_for([port, free_ports(1)[0]]), 5)

  def test_lone_task_does_not_wait(self):
    self.assertEqual(peer_wait.wait_for_peers(task_for([free_ports(1)[0]]), 7), 7)


class _Lines:

  def __init__(self):
    self.lines = []

  def write(self, text):
    self.lines.extend(text.splitlines())

  def flush(self):
    pass


class MultiWorkerProcessTest(tf.test.TestCase, parameterized.TestCase):
  """All worker processes start at once in setUpClass (TensorFlow's start-up
  dominates, so they share it); each test then checks its own."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.workers = []

    def start(name, ports, index, *args):
      worker = Worker(ports, index, cls.dir, *args, name=name)
      cls.workers.append(worker)
      return worker

    cls.cluster_ports = free_ports(2)
    cls.cluster = [start(f'cluster{i}', cls.cluster_ports, i, '--hold')
                   for i in range(2)]
    cls.lone_ports = free_ports(2)
    cls.lone = start('lone', cls.lone_ports, 0, '--peer_timeout', '4')
    # SIGTERM end to end; SIGINT takes the same path (checked in-process).
    cls.waiting_ports = free_ports(2)
    cls.waiting = start('waiting', cls.waiting_ports, 1, '--peer_timeout', '600')

  @classmethod
  def tearDownClass(cls):
    for worker in cls.workers:
      worker.stop()
    shutil.rmtree(cls.dir, ignore_errors=True)
    super().tearDownClass()

  def test_two_workers_warn_and_listen_where_the_line_says(self):
    ports = self.cluster_ports
    for index, worker in enumerate(self.cluster):
      for line in worker.process.stdout:
        if line.startswith('READY'):
          break
      else:
        self.fail(f'worker {index} ended: {worker.stderr_lines()}')
      sockets = [s for s in cluster_security.listening_sockets(worker.process.pid)
                 if s.port == ports[index]]
      warning = [l for l in worker.stderr_lines() if l.startswith('tf_mp: warning:')]
      self.assertLen(warning, 1)
      self.assertEqual(warning, worker.stderr_lines()[:1])  # The first line.
      self.assertIn(f'listens on port {ports[index]} on all network interfaces',
                    warning[0])
      # What the line says is what the kernel shows: TensorFlow's gRPC server
      # listens on the wildcard address, not on 127.0.0.1 as TF_CONFIG names.
      # If a TensorFlow release binds the task's own address, this fails and
      # the line and docs/security.md must change with it.
      self.assertNotEmpty(sockets)
      self.assertTrue(all(s.is_wildcard for s in sockets), sockets)
      worker.stop()

  def test_lone_worker_says_it_waits_then_gives_up_with_one_line(self):
    worker, ports = self.lone, self.lone_ports
    worker.process.wait(timeout=PROCESS_S)
    self.assertEqual(worker.process.returncode, 1)
    lines = worker.stderr_lines()
    self.assertLen(lines, 3, lines)
    self.assertStartsWith(lines[0], 'tf_mp: warning:')
    self.assertStartsWith(lines[1], 'tf_mp: waiting for 1 of 1 other worker(s) to start: '
                          f'worker:1 at 127.0.0.1:{ports[1]} (giving up after 4s')
    self.assertStartsWith(lines[2], 'strategy_worker.py: error: gave up after 4s waiting ')
    self.assertIn(f'worker:1 at 127.0.0.1:{ports[1]} never answered', lines[2])
    self.assertNotIn('READY', worker.process.stdout.read())

  def test_sigterm_while_waiting_exits_143_with_one_line(self):
    signum, status = signal.SIGTERM, 143
    ports, worker = self.waiting_ports, self.waiting
    worker.wait_for_stderr('tf_mp: waiting for', PROCESS_S)
    # While waiting, only a placeholder on the task's own (loopback) address
    # listens: TensorFlow's all-interface server has not started yet.
    sockets = cluster_security.listening_sockets(worker.process.pid)
    self.assertEqual([(s.host, s.port) for s in sockets], [('127.0.0.1', ports[1])])
    worker.process.send_signal(signum)
    worker.process.wait(timeout=60)
    self.assertEqual(worker.process.returncode, status)
    lines = worker.stderr_lines()
    self.assertLen(lines, 3, lines)
    self.assertEqual(lines[2], 'strategy_worker.py: error: interrupted by '
                     f'{signal.Signals(signum).name} while waiting for the other '
                     f'workers (worker:0 at 127.0.0.1:{ports[0]}); nothing was started')


# Code that reads user files: nothing here may unpickle or execute them.
INPUT_CODE = ('tf_mp', 'examples')
FORBIDDEN = [
    (r'^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve|marshal)\b', 'a pickle module'),
    (r'allow_pickle\s*=\s*True', 'allow_pickle=True'),
    (r'\b(pd\.read_pickle|torch\.load)\b', 'a pickle loader'),
    (r'(?<![\w.])(eval|exec)\s*\(', 'eval/exec'),
    (r'yaml\.(unsafe_)?load\s*\(', 'yaml.load'),
    (r'saved_model\.load\s*\(|keras\.models\.load_model\s*\(', 'loading a SavedModel'),
]


def _python_files(top):
  for root, _, files in os.walk(os.path.join(ROOT, top)):
    for name in files:
      if name.endswith('.py'):
        yield os.path.join(root, name)


class NoUnpicklingTest(tf.test.TestCase, parameterized.TestCase):

  def test_no_input_path_can_unpickle_or_execute(self):
    found = []
    for path in (p for top in INPUT_CODE for p in _python_files(top)):
      with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
          for pattern, what in FORBIDDEN:
            if re.search(pattern, line):
              found.append(f'{os.path.relpath(path, ROOT)}:{number}: {what}')
          if re.search(r'\bnp\.load\(', line) and 'allow_pickle=False' not in line:
            found.append(f'{os.path.relpath(path, ROOT)}:{number}: np.load without '
                         'allow_pickle=False')
    self.assertEmpty(found)

  def _assert_refused_without_running(self, path, marker):
    with self.assertRaisesRegex(tf_mp.TfMpError, f'data file {re.escape(repr(path))} '):
      tf_mp.load_npz(path)
    self.assertFalse(os.path.exists(marker), 'the pickle ran')

  def test_pickle_renamed_npz_is_refused_and_not_run(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    marker = os.path.join(directory, 'ran')
    path = os.path.join(directory, 'data.npz')
    with open(path, 'wb') as f:
      pickle.dump(_Payload(marker), f)
    self._assert_refused_without_running(path, marker)

  def test_object_array_in_npz_is_refused_and_not_run(self):
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    marker = os.path.join(directory, 'ran')
    path = os.path.join(directory, 'data.npz')
    x = np.empty((2,), dtype=object)
    x[0], x[1] = _Payload(marker), 1
    np.savez(path, x=x, y=np.zeros(2, np.int32))
    self._assert_refused_without_running(path, marker)


class NativeCodeTrustTest(tf.test.TestCase):
  """Op libraries are loaded only from files only you (or root) can change."""

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()  # Mode 0700: only this user.
    self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)

  def library(self, directory, mode):
    path = os.path.join(directory, '_concat_op.so')
    with open(path, 'wb') as f:
      f.write(b'not a library')
    os.chmod(path, mode)
    return path

  def test_own_private_file_is_trusted(self):
    self.assertIsNone(file_trust.untrusted_reason(self.library(self.dir, 0o644)))

  def test_world_writable_file_is_not(self):
    path = self.library(self.dir, 0o666)
    self.assertEqual(file_trust.untrusted_reason(path),
                     f'{os.path.realpath(path)} is writable by every user (mode -rw-rw-rw-)')

  def test_world_writable_directory_without_sticky_bit_is_not(self):
    shared = os.path.join(self.dir, 'shared')
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    self.assertStartsWith(file_trust.untrusted_reason(self.library(shared, 0o644)),
                          f'directory {os.path.realpath(shared)} is writable by every user')
    os.chmod(shared, 0o1777)  # Like /tmp: others cannot replace your file.
    self.assertIsNone(file_trust.untrusted_reason(os.path.join(shared, '_concat_op.so')))

  def test_op_loader_refuses_before_loading(self):
    with open(os.path.join(self.dir, 'build_info.json'), 'w') as f:
      json.dump({'tf_version': tf.__version__, 'tf_git_version': tf.version.GIT_VERSION,
                 'cpu_library': '_concat_op.so'}, f)
    self.library(self.dir, 0o666)
    # A loaded bogus file would fail with "loading ... failed" instead.
    with self.assertRaisesRegex(tf_mp.TfMpError, 'not usable: refusing to load native '
                                'code from .*_concat_op.so: .* writable by every user'):
      OpLibrary(self.dir).load(required=True)


class _Payload:
  """Unpickling it creates `marker`: evidence that a pickle was loaded."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


if __name__ == '__main__':
  tf.test.main()
