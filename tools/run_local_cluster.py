"""Runs the tutorial as a multi-worker cluster on this machine: N workers on 127.0.0.1.

Each worker is `examples/tutorial.py --strategy multi_worker` (one replica of
the three-device model per worker) with its own TF_CONFIG and free ports. The
chief's (worker 0's) lines are printed here; the other workers write theirs to
files (`--log_dir`, default a temporary folder, whose path is printed when a
worker fails). Waits for all; if any worker fails, stops the others and exits
1 naming it and showing the end of its log. Ctrl-C (or SIGTERM) is passed on
to every worker as SIGINT, so each stops at a step boundary; after
--grace_seconds the rest are killed. Nothing is left running.

  .venv/bin/python tools/run_local_cluster.py --workers 2 -- --steps 1000
  .venv/bin/python tools/run_local_cluster.py --workers 2 -- --steps 1000 \\
      --devices cpu:0,cpu:1,cpu:2 --checkpoint_dir /tmp/mw_ckpt

Everything after `--` goes to every worker (see `examples/tutorial.py --help`).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import free_ports  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, 'examples', 'tutorial.py')


def tf_config(addresses: list, index: int) -> str:
  return json.dumps({'cluster': {'worker': addresses},
                     'task': {'type': 'worker', 'index': index}})


def tail(path: str, lines: int = 5) -> str:
  with open(path, errors='replace') as f:
    return '\n'.join(f.read().splitlines()[-lines:])


def stop(processes: list, grace_seconds: float) -> None:
  """SIGINT to the running workers, then SIGKILL to those still running after the grace."""
  for process in processes:
    if process.poll() is None:
      process.send_signal(signal.SIGINT)
  deadline = time.monotonic() + grace_seconds
  for process in processes:
    try:
      process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


class _Interrupted(Exception):

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def _raise_interrupted(signum, frame):
  del frame
  raise _Interrupted(signum)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      usage='%(prog)s [--workers N] [--timeout S] [--log_dir DIR] -- [tutorial flags]')
  parser.add_argument('--workers', type=int, default=2, help='Number of workers (>= 1).')
  parser.add_argument('--timeout', type=float, default=3600,
                      help='Seconds the whole run may take before every worker is stopped.')
  parser.add_argument('--grace_seconds', type=float, default=30,
                      help='Seconds a stopped worker gets to save and exit before it is killed.')
  parser.add_argument('--log_dir', default=None,
                      help='Where the non-chief workers write worker_<i>.log.')
  args, worker_args = parser.parse_known_args(argv)
  if worker_args[:1] == ['--']:
    worker_args = worker_args[1:]
  if args.workers < 1:
    parser.error(f'--workers must be >= 1, got {args.workers}')
  log_dir = args.log_dir or tempfile.mkdtemp(prefix='tf_mp_cluster_')
  os.makedirs(log_dir, exist_ok=True)
  addresses = [f'127.0.0.1:{port}' for port in free_ports(args.workers)]
  # The repository's tf_mp, whether or not it is installed in this Python.
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)

  processes, logs = [], []
  previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    for index in range(args.workers):
      env = dict(os.environ, TF_CONFIG=tf_config(addresses, index), PYTHONPATH=path)
      command = [sys.executable, TUTORIAL, '--strategy', 'multi_worker', *worker_args]
      if index == 0:
        out = None  # The chief's lines go to this terminal.
      else:
        logs.append(os.path.join(log_dir, f'worker_{index}.log'))
        out = open(logs[-1], 'w')
      # Own session: a Ctrl-C reaches the workers once, from here.
      processes.append(subprocess.Popen(command, env=env, stdout=out,
                                        stderr=subprocess.STDOUT if out else None,
                                        start_new_session=True))
      if out:
        out.close()
    deadline = time.monotonic() + args.timeout
    while True:
      codes = [p.poll() for p in processes]
      failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
      if failed:
        index = failed[0]
        stop(processes, args.grace_seconds)
        where = (f'; its log ({logs[index - 1]}) ends:\n{tail(logs[index - 1])}'
                 if index else '')
        print(f'run_local_cluster: worker {index} failed with exit status '
              f'{codes[index]}; stopped the others{where}', file=sys.stderr)
        return 1
      if all(code == 0 for code in codes):
        return 0
      if time.monotonic() > deadline:
        stop(processes, args.grace_seconds)
        print(f'run_local_cluster: not done after --timeout {args.timeout:g} s; '
              f'stopped all workers (logs in {log_dir})', file=sys.stderr)
        return 1
      time.sleep(0.2)
  except _Interrupted as e:
    stop(processes, args.grace_seconds)
    print(f'run_local_cluster: stopped by {signal.Signals(e.signum).name}; '
          f'workers stopped (logs in {log_dir})', file=sys.stderr)
    return 128 + e.signum
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()


if __name__ == '__main__':
  sys.exit(main())
