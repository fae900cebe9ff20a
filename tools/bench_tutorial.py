"""Times the tutorial port against the document's TF1 program, side by side in one run.

Both train the same configuration on the same batches for --steps steps on
three logical CPU devices, each in its own process, alternating which goes
first, --repeats times. Prints the median training-loop time, the whole
process's wall time, steps per second, peak resident memory, and the ratios
TF1 / port.

  python tools/bench_tutorial.py                  # 10000 steps, 3 repeats
  python tools/bench_tutorial.py --steps 2000 --repeats 1
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = os.path.join(ROOT, 'examples', 'tutorial.py')
TF1 = os.path.join(ROOT, 'tests', 'reference', 'tf1_program.py')

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps for each program.')
flags.DEFINE_integer('repeats', 3, 'Runs of each program (medians are reported).')


def run(argv, tmp):
  """Runs one program to completion; returns (wall seconds, peak RSS MB, stdout)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  out_path, err_path = os.path.join(tmp, 'stdout'), os.path.join(tmp, 'stderr')
  with open(out_path, 'w') as out, open(err_path, 'w') as err:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone.
    wall = time.perf_counter() - start
  with open(out_path) as out, open(err_path) as err:
    stdout, stderr = out.read(), err.read()
  if os.waitstatus_to_exitcode(status):
    sys.exit(f'{argv[1]} failed:\n{stderr[-2000:]}')
  return wall, usage.ru_maxrss / 1024, stdout


def run_port(steps, tmp):
  wall, rss, stdout = run([sys.executable, PORT, '--steps', str(steps),
                           '--devices', 'cpu:0,cpu:1,cpu:2'], tmp)
  match = re.search(r'^Done: (\d+) steps, final loss (\S+), ([\d.]+) steps/s$',
                    stdout, re.MULTILINE)
  return dict(train_seconds=int(match.group(1)) / float(match.group(3)),
              wall_seconds=wall, peak_rss_mb=rss, final_loss=float(match.group(2)))


def run_tf1(steps, tmp):
  report = os.path.join(tmp, 'tf1.json')
  wall, rss, _ = run([sys.executable, TF1, '--steps', str(steps), '--num_devices',
                      '3', '--quiet', '--report_json', report], tmp)
  with open(report) as f:
    measured = json.load(f)
  return dict(train_seconds=measured['train_seconds'], wall_seconds=wall,
              peak_rss_mb=rss, final_loss=measured['final_loss'])


def main(argv):
  del argv
  results = {'port': [], 'tf1': []}
  with tempfile.TemporaryDirectory() as tmp:
    for repeat in range(FLAGS.repeats):
      order = ['port', 'tf1'] if repeat % 2 == 0 else ['tf1', 'port']
      for name in order:
        result = (run_port if name == 'port' else run_tf1)(FLAGS.steps, tmp)
        results[name].append(result)
        print(f'  run {repeat + 1} {name}: {result["train_seconds"]:.2f} s training, '
              f'{result["wall_seconds"]:.2f} s wall', flush=True)

  def median(name, key):
    return statistics.median(r[key] for r in results[name])

  print(f'\n{FLAGS.steps} steps, batch 64, three logical CPU devices, '
        f'median of {FLAGS.repeats}:')
  header = (f'{"program":<28}{"training s":>12}{"steps/s":>10}{"wall s":>9}'
            f'{"peak RSS MB":>13}{"final loss":>12}')
  print(header)
  rows = (('tf_mp port (TF2)', 'port'), ('document TF1 (Session.run)', 'tf1'))
  for label, name in rows:
    train = median(name, 'train_seconds')
    print(f'{label:<28}{train:>12.2f}{FLAGS.steps / train:>10.0f}'
          f'{median(name, "wall_seconds"):>9.2f}{median(name, "peak_rss_mb"):>13.0f}'
          f'{median(name, "final_loss"):>12.3g}')
  print(f'speed-up of the port, training loop: '
        f'{median("tf1", "train_seconds") / median("port", "train_seconds"):.2f}x; '
        f'whole process: {median("tf1", "wall_seconds") / median("port", "wall_seconds"):.2f}x')


if __name__ == '__main__':
  app.run(main)
