"""What the benchmarks in tools/ share: interleaved rounds, medians, ratios, tables, processes.

A benchmark on a shared machine compares contenders side by side: each round
runs every contender once, in an order that rotates from round to round, so
load from other processes hits all of them alike; figures are medians over the
rounds, and a comparison is a ratio (of medians, or the median of per-round
ratios, which cancels slow drifts of the machine).

  import benchlib
  rounds = benchlib.interleaved({'a': time_a, 'b': time_b}, rounds=5)
  print(benchlib.markdown_table(['who', 'median s'],
                                [[n, f'{benchlib.median(t):.3f}'] for n, t in rounds.items()]))

Nothing here imports TensorFlow; importing benchlib sets TF_CPP_MIN_LOG_LEVEL
to 3 (unless it is set), so a benchmark that imports it first, and every child
it starts, keeps TensorFlow's C++ log lines out of its tables.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# The flags of tools/reference/tf1_program.py that give the TF1 program the
# port's thread pools under each TF_MP_CPU_THREADS mode, for its three devices
# (see tf_mp.devices.match_threads_to_devices): 'exact' keeps TensorFlow's
# pool sizes and only stops idle threads spinning.
TF1_POOLS = {
    'tensorflow': (),
    'exact': ('--no_spinning',),
    'matched': ('--intra_threads', '1', '--inter_threads', '3', '--no_spinning'),
}


def enable_cpu_memory_stats() -> None:
  """Lets `tf.config.experimental.reset_memory_stats('CPU:0')` work; call before TF loads.

  TensorFlow keeps peak-memory figures for the CPU only with its BFC allocator
  on the CPU (otherwise: "Cannot reset memory stats for device CPU:0").
  """
  os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')


def interleaved(contenders: Dict[str, Callable[[], object]], rounds: int,
                on_result: Callable[[int, str, object], None] = None) -> Dict[str, list]:
  """Calls every contender once per round, rotating who goes first.

  Args:
    contenders: name -> a call returning one measurement (seconds, a dict...).
    rounds: how many rounds.
    on_result: called as `on_result(round, name, result)` after each call
      (progress lines).

  Returns:
    name -> the list of its `rounds` results, in round order.
  """
  names = list(contenders)
  results = {name: [] for name in names}
  for round_index in range(rounds):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      result = contenders[name]()
      results[name].append(result)
      if on_result is not None:
        on_result(round_index, name, result)
  return results


def median(values: Sequence[float]) -> float:
  return statistics.median(values)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
  """The median over rounds of numerator / denominator measured in the same round."""
  return statistics.median(a / b for a, b in zip(numerators, denominators))


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def calibrate(fn: Callable[[], object], min_time: float) -> int:
  """Calls per timing so that one timing of `fn` lasts at least `min_time` seconds."""
  fn()
  calls = 1
  while seconds_per_call(fn, calls) * calls < min_time:
    calls *= 2
  return calls


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """`| a | b |` rows under a header and its `|---|` line."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def text_table(rows: Sequence[Sequence[str]], right_align_from: int = 1) -> str:
  """Columns padded to their widest cell; the first `right_align_from` columns left-aligned."""
  rows = [[str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return '\n'.join(
      '  '.join(c.ljust(w) if i < right_align_from else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))).rstrip()
      for row in rows)


def quiet_env(**extra) -> dict:
  """The environment for a benchmarked child: TensorFlow's C++ log level 3, the repo's tf_mp.

  Python may write bytecode (PYTHONDONTWRITEBYTECODE is dropped): tf_mp's
  modules are then compiled once, not in every timed start-up, as for a
  package that pip installed (TensorFlow's own modules come compiled).
  """
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=path, **extra)
  env.pop('PYTHONDONTWRITEBYTECODE', None)
  return env


def run_process(argv: List[str], env: dict = None, first_line: str = None,
                cwd: str = ROOT) -> dict:
  """Runs a child to completion: its wall seconds, peak resident MB (its own, from wait4), output.

  With `first_line` (a prefix), also `first_line_seconds`: when the child
  printed the first line starting with it, from the start of the process
  (its stdout is read as it comes, line by line).

  Exits this program with the child's last stderr lines if it fails.
  """
  first = None
  with tempfile.TemporaryFile('w+') as err:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                            env=env or quiet_env(), cwd=cwd)
    lines = []
    for line in proc.stdout:
      if first is None and first_line is not None and line.startswith(first_line):
        first = time.perf_counter() - start
      lines.append(line)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    err.seek(0)
    stdout, stderr = ''.join(lines), err.read()
  if proc.returncode:
    sys.exit(f'{" ".join(argv[1:3])} failed (exit {proc.returncode}):\n{stderr[-2000:]}')
  return {'wall_seconds': wall, 'peak_rss_mb': usage.ru_maxrss / 1024,
          'first_line_seconds': first, 'stdout': stdout, 'stderr': stderr}


def free_ports(count: int) -> list:
  """`count` distinct ports on 127.0.0.1 that were free a moment ago."""
  from tf_mp.distribute.cluster import free_loopback_ports  # pylint: disable=g-import-not-at-top
  return free_loopback_ports(count)
