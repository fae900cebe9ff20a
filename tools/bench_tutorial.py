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
import sys
import tempfile

from absl import app
from absl import flags

import benchlib

ROOT = benchlib.ROOT
PORT = os.path.join(ROOT, 'examples', 'tutorial.py')
TF1 = os.path.join(ROOT, 'tools', 'reference', 'tf1_program.py')

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps for each program.', lower_bound=1)
flags.DEFINE_integer('repeats', 3, 'Runs of each program (medians are reported).',
                     lower_bound=1)


def run_port(steps):
  run = benchlib.run_process([sys.executable, PORT, '--steps', str(steps),
                              '--devices', 'cpu:0,cpu:1,cpu:2'])
  match = re.search(r'^Done: (\d+) steps, final loss (\S+), ([\d.]+) steps/s$',
                    run['stdout'], re.MULTILINE)
  return dict(train_seconds=int(match.group(1)) / float(match.group(3)),
              wall_seconds=run['wall_seconds'], peak_rss_mb=run['peak_rss_mb'],
              final_loss=float(match.group(2)))


def run_tf1(steps):
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, 'tf1.json')
    run = benchlib.run_process([sys.executable, TF1, '--steps', str(steps), '--num_devices',
                                '3', '--quiet', '--report_json', report])
    with open(report) as f:
      measured = json.load(f)
  return dict(train_seconds=measured['train_seconds'], wall_seconds=run['wall_seconds'],
              peak_rss_mb=run['peak_rss_mb'], final_loss=measured['final_loss'])


def main(argv):
  del argv
  results = benchlib.interleaved(
      {'port': lambda: run_port(FLAGS.steps), 'tf1': lambda: run_tf1(FLAGS.steps)},
      FLAGS.repeats,
      on_result=lambda i, name, r: print(
          f'  run {i + 1} {name}: {r["train_seconds"]:.2f} s training, '
          f'{r["wall_seconds"]:.2f} s wall', flush=True))

  def median(name, key):
    return benchlib.median([r[key] for r in results[name]])

  print(f'\n{FLAGS.steps} steps, batch 64, three logical CPU devices, '
        f'median of {FLAGS.repeats}:')
  rows = [('program', 'training s', 'steps/s', 'wall s', 'peak RSS MB', 'final loss')]
  for label, name in (('tf_mp port (TF2)', 'port'), ('document TF1 (Session.run)', 'tf1')):
    train = median(name, 'train_seconds')
    rows.append((label, f'{train:.2f}', f'{FLAGS.steps / train:.0f}',
                 f'{median(name, "wall_seconds"):.2f}', f'{median(name, "peak_rss_mb"):.0f}',
                 f'{median(name, "final_loss"):.3g}'))
  print(benchlib.text_table(rows))
  print(f'speed-up of the port, training loop: '
        f'{median("tf1", "train_seconds") / median("port", "train_seconds"):.2f}x; '
        f'whole process: {median("tf1", "wall_seconds") / median("port", "wall_seconds"):.2f}x')


if __name__ == '__main__':
  app.run(main)
