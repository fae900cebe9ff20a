"""Runs the tutorial as a multi-worker cluster on this machine: N workers on 127.0.0.1.

Each worker is `examples/tutorial.py --strategy multi_worker` (one replica of
the three-device model per worker) with its own TF_CONFIG and free ports. The
chief's (worker 0's) lines are printed here; the other workers write theirs to
files (`--log_dir`, default a temporary folder, whose path is printed when a
worker fails). Waits for all; if any worker fails, stops the others and exits
1 naming it and showing the end of its log. Ctrl-C (or SIGTERM) is passed on
to every worker as SIGTERM, so each stops at a step boundary; after
--grace_seconds the rest are killed. Nothing is left running, even when this
launcher is killed with SIGKILL (each worker then gets SIGTERM; Linux).

  .venv/bin/python tools/run_local_cluster.py --workers 2 -- --steps 1000
  .venv/bin/python tools/run_local_cluster.py --workers 2 -- --steps 1000 \\
      --devices cpu:0,cpu:1,cpu:2 --checkpoint_dir /tmp/mw_ckpt

Everything after `--` goes to every worker (see `examples/tutorial.py --help`).
"""

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import free_ports  # pylint: disable=g-bad-import-order
from tf_mp.errors import TfMpError
from tf_mp.files import check_writable_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, 'examples', 'tutorial.py')
# Each worker is a TensorFlow process with threads for its three devices;
# beyond a few per core they only slow each other down (or run out of
# threads: seen as "Resource temporarily unavailable" aborts).
WORKERS_PER_CPU = 4


def cpu_count() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


class _Parser(argparse.ArgumentParser):
  """Argument errors end in one line and exit status 1, as in the tf_mp programs."""

  def error(self, message):
    sys.stderr.write(f'run_local_cluster: error: {message}; see --help\n')
    sys.exit(1)


def _workers(text: str) -> int:
  try:
    count = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  most = WORKERS_PER_CPU * cpu_count()
  if not 1 <= count <= most:
    raise argparse.ArgumentTypeError(
        f'{count} is not in [1, {most}] ({WORKERS_PER_CPU} per CPU core, '
        f'{cpu_count()} here)')
  return count


def _seconds(minimum_excluded: bool):
  """An argparse type: a finite number of seconds, > 0 or >= 0."""
  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not math.isfinite(value) or value < 0 or (minimum_excluded and value == 0):
      raise argparse.ArgumentTypeError(
          f'{text} is not a finite number of seconds {">" if minimum_excluded else ">="} 0')
    return value
  return parse


def tf_config(addresses: list, index: int) -> str:
  return json.dumps({'cluster': {'worker': addresses},
                     'task': {'type': 'worker', 'index': index}})


def tail(path: str, lines: int = 5) -> str:
  with open(path, errors='replace') as f:
    return '\n'.join(f.read().splitlines()[-lines:])


class _Interrupted(Exception):

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


class _Signals:
  """SIGINT / SIGTERM here: the first raises _Interrupted; a later one cuts the grace short.

  Within `hold()`, the first is only recorded, and raised when the block ends.
  """

  def __init__(self):
    self.count = 0
    self.first = None
    self.held = False

  def handle(self, signum, frame):
    del frame
    self.count += 1
    if self.count == 1:
      self.first = signum
      if not self.held:
        raise _Interrupted(signum)

  @contextlib.contextmanager
  def hold(self):
    self.held = True
    try:
      yield
    finally:
      self.held = False
    if self.count:
      raise _Interrupted(self.first)


_BOTH = (signal.SIGINT, signal.SIGTERM)


def stop(processes: list, grace_seconds: float, signals: _Signals) -> None:
  """SIGTERM to each running worker (once), then SIGKILL to those still running after the grace.

  Returns when every worker has exited. Another signal here ends the grace at once.
  SIGTERM rather than SIGINT: a worker still in Python's own start-up (a
  failure or --timeout right after the start) turns a SIGINT into a "Fatal
  Python error" traceback on this terminal; a SIGTERM ends it quietly, and
  in training both stop it at a step boundary.
  """
  for process in processes:
    if process.poll() is None and not getattr(process, 'interrupted', False):
      process.send_signal(signal.SIGTERM)
      process.interrupted = True
  seen, deadline = signals.count, time.monotonic() + grace_seconds
  while (any(p.poll() is None for p in processes) and time.monotonic() < deadline
         and signals.count == seen):
    time.sleep(0.1)
  for process in processes:
    if process.poll() is None:
      process.kill()
    process.wait()


def _die_with_launcher(launcher: int):
  """A worker's pre-exec hook: SIGTERM to it when the launcher dies, even by SIGKILL.

  The workers run in their own sessions (a Ctrl-C reaches them once, from
  here), so nothing else would stop them: a launcher killed by SIGKILL (or the
  OOM killer) left them training, or waiting for peers, with their ports held.
  Linux only (prctl); elsewhere a no-op.
  """
  def hook():
    if not sys.platform.startswith('linux'):
      return
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != launcher:  # It died before the line above.
      os.kill(os.getpid(), signal.SIGTERM)
  return hook


def start_workers(args, worker_args: list, log_dir: str, addresses: list,
                  processes: list, logs: list, signals: _Signals) -> None:
  """Starts the workers, appending each to `processes` (the chief's output is this terminal's)."""
  # The repository's tf_mp, whether or not it is installed in this Python.
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
  for index in range(args.workers):
    env = dict(os.environ, TF_CONFIG=tf_config(addresses, index), PYTHONPATH=path)
    command = [sys.executable, TUTORIAL, '--strategy', 'multi_worker', *worker_args]
    # A signal between the start of a worker and its place in `processes`
    # would leave it running, unknown to `stop`: it is acted on after.
    # (Not by blocking signals: the worker would inherit the mask.)
    with signals.hold():
      out = None  # The chief's lines go to this terminal.
      if index:
        logs.append(os.path.join(log_dir, f'worker_{index}.log'))
        out = open(logs[-1], 'w')
      # Own session: a Ctrl-C reaches the workers once, from here.
      processes.append(subprocess.Popen(command, env=env, stdout=out,
                                        stderr=subprocess.STDOUT if out else None,
                                        start_new_session=True,
                                        preexec_fn=_die_with_launcher(os.getpid())))
      if out:
        out.close()


def supervise(args, log_dir: str, processes: list, logs: list, signals: _Signals) -> int:
  """Waits for the workers; stops them all when one fails or --timeout passes."""
  deadline = time.monotonic() + args.timeout
  while True:
    codes = [p.poll() for p in processes]
    failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
    if failed:
      index = failed[0]
      stop(processes, args.grace_seconds, signals)
      where = (f'; its log ({logs[index - 1]}) ends:\n{tail(logs[index - 1])}'
               if index else '')
      print(f'run_local_cluster: worker {index} failed with exit status '
            f'{codes[index]}; stopped the others{where}', file=sys.stderr)
      return 1
    if all(code == 0 for code in codes):
      return 0
    if time.monotonic() > deadline:
      stop(processes, args.grace_seconds, signals)
      print(f'run_local_cluster: not done after --timeout {args.timeout:g} s; '
            f'stopped all workers (logs in {log_dir})', file=sys.stderr)
      return 1
    time.sleep(0.2)


def _check_strategy(worker_args) -> None:
  """Refuses a forwarded --strategy other than multi_worker (it would override the tool's).

  With `-- --strategy none` each worker trained on its own, silently: no cluster.
  """
  for i, arg in enumerate(worker_args):
    value = (worker_args[i + 1] if arg == '--strategy' and i + 1 < len(worker_args) else
             arg.split('=', 1)[1] if arg.startswith('--strategy=') else None)
    if value is not None and value.strip().lower() != 'multi_worker':
      raise TfMpError(f'--strategy {value!r} among the tutorial flags; the workers always run '
                      '--strategy multi_worker (leave the flag out)')


def main(argv=None) -> int:
  parser = _Parser(
      description=__doc__.split('\n\n')[0],
      usage='%(prog)s [--workers N] [--timeout S] [--log_dir DIR] -- [tutorial flags]')
  parser.add_argument('--workers', type=_workers, default=2,
                      help=f'Number of workers (1 to {WORKERS_PER_CPU} per CPU core).')
  parser.add_argument('--timeout', type=_seconds(True), default=3600,
                      help='Seconds the whole run may take before every worker is stopped.')
  parser.add_argument('--grace_seconds', type=_seconds(False), default=30,
                      help='Seconds a stopped worker gets to save and exit before it is killed.')
  parser.add_argument('--log_dir', default=None,
                      help='Where the non-chief workers write worker_<i>.log.')
  args, worker_args = parser.parse_known_args(argv)
  if worker_args[:1] == ['--']:
    worker_args = worker_args[1:]
  try:
    _check_strategy(worker_args)
    log_dir = (check_writable_dir(args.log_dir, '--log_dir') if args.log_dir is not None
               else tempfile.mkdtemp(prefix='tf_mp_cluster_'))
    addresses = [f'127.0.0.1:{port}' for port in free_ports(args.workers)]
  except (TfMpError, OSError) as e:
    print(f'run_local_cluster: error: {e}', file=sys.stderr)
    return 1

  processes, logs, signals = [], [], _Signals()
  previous = {s: signal.signal(s, signals.handle) for s in _BOTH}
  try:
    try:
      start_workers(args, worker_args, log_dir, addresses, processes, logs, signals)
    except OSError as e:  # A log file or a worker that cannot be started.
      stop(processes, args.grace_seconds, signals)
      print(f'run_local_cluster: error: cannot start worker {len(processes)} ({e}); '
            'stopped the others', file=sys.stderr)
      return 1
    return supervise(args, log_dir, processes, logs, signals)
  except _Interrupted as e:
    stop(processes, args.grace_seconds, signals)
    print(f'run_local_cluster: stopped by {signal.Signals(e.signum).name}; '
          f'workers stopped (logs in {log_dir})', file=sys.stderr)
    return 128 + e.signum
  finally:
    # Whatever happened above, nothing is left running; a signal now changes nothing.
    for s in _BOTH:
      signal.signal(s, signal.SIG_IGN)
    for process in processes:
      if process.poll() is None:
        process.kill()
      process.wait()
    for s, handler in previous.items():
      signal.signal(s, handler)


if __name__ == '__main__':
  sys.exit(main())
