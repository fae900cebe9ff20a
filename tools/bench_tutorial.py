"""Times the tutorial port against the document's TF1 program, side by side in one run.

All train the same configuration on the same batches for --steps steps on
three logical CPU devices, each in its own process, in interleaved rounds
(the order rotates), --repeats times. The contenders (--contenders picks):

  port            examples/tutorial.py as `make tutorial` runs it: TensorFlow's
                  pool sizes (bit-exact with the document's program), idle pool
                  threads sleeping instead of spinning (TF_MP_CPU_THREADS=exact)
  tf1             the document's TF1 program as written (default session)
  tf1_same_pools  the same program given the port's pools (spinning off): an
                  engine-for-engine comparison with port
  port_matched    the port with TF_MP_CPU_THREADS=matched (intra-op 1,
                  inter-op 3): what matched pools buy, at the cost of
                  bit-exactness with the document's program as written
  tf1_matched     the document's program given the matched pools: an
                  engine-for-engine comparison with port_matched
  port_spinning   the port with TensorFlow's pools untouched
                  (TF_MP_CPU_THREADS=tensorflow): what sleeping threads buy

Reports medians of the training-loop time, the whole process's wall time,
the time from process start to the first `Step: 0` line, peak resident
memory, and the ratios against the port.

  .venv/bin/python tools/bench_tutorial.py                  # 10000 steps, 3 repeats
  .venv/bin/python tools/bench_tutorial.py --steps 2000 --repeats 1
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
flags.DEFINE_list('contenders', ['port', 'tf1', 'tf1_same_pools', 'port_matched',
                                  'tf1_matched', 'port_spinning'],
                  'Which programs to run (port and tf1 always).')
flags.DEFINE_integer('repeats', 3, 'Runs of each program (medians are reported).',
                     lower_bound=1)


def run_port(steps, **env):
  run = benchlib.run_process([sys.executable, PORT, '--steps', str(steps),
                              '--devices', 'cpu:0,cpu:1,cpu:2'],
                             env=benchlib.quiet_env(**env), first_line='Step: 0 ')
  match = re.search(r'^Done: (\d+) steps, final loss (\S+), ([\d.]+) steps/s$',
                    run['stdout'], re.MULTILINE)
  return dict(train_seconds=int(match.group(1)) / float(match.group(3)),
              wall_seconds=run['wall_seconds'], first_seconds=run['first_line_seconds'],
              peak_rss_mb=run['peak_rss_mb'], final_loss=float(match.group(2)))


def run_tf1(steps, *pools):
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, 'tf1.json')
    run = benchlib.run_process([sys.executable, TF1, '--steps', str(steps), '--num_devices',
                                '3', '--report_json', report, *pools],
                               first_line='Step: 0 ')
    with open(report) as f:
      measured = json.load(f)
  return dict(train_seconds=measured['train_seconds'], wall_seconds=run['wall_seconds'],
              first_seconds=run['first_line_seconds'], peak_rss_mb=run['peak_rss_mb'],
              final_loss=measured['final_loss'])


CONTENDERS = {
    'port': ('tf_mp port (TF2)', lambda steps: run_port(steps)),
    'tf1': ('document TF1, as written', lambda steps: run_tf1(steps)),
    'tf1_same_pools': ("document TF1, port's pools",
                       lambda steps: run_tf1(steps, *benchlib.TF1_POOLS['exact'])),
    'port_matched': ('port, matched pools (opt-in)',
                     lambda steps: run_port(steps, TF_MP_CPU_THREADS='matched')),
    'tf1_matched': ('document TF1, matched pools', lambda steps: run_tf1(steps, *benchlib.TF1_POOLS['matched'])),
    'port_spinning': ("port, TensorFlow's pools untouched",
                      lambda steps: run_port(steps, TF_MP_CPU_THREADS='tensorflow')),
}


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.contenders) - set(CONTENDERS))
  if unknown or not {'port', 'tf1'} <= set(FLAGS.contenders):
    sys.exit(f'error: --contenders {",".join(FLAGS.contenders)}: expected port, tf1 and any '
             f'of {", ".join(CONTENDERS)}')
  contenders = {name: CONTENDERS[name] for name in CONTENDERS if name in FLAGS.contenders}
  results = benchlib.interleaved(
      {name: (lambda run=run: run(FLAGS.steps)) for name, (_, run) in contenders.items()},
      FLAGS.repeats,
      on_result=lambda i, name, r: print(
          f'  run {i + 1} {name}: {r["train_seconds"]:.2f} s training, '
          f'{r["wall_seconds"]:.2f} s wall, first line at {r["first_seconds"]:.2f} s',
          flush=True))

  def median(name, key):
    return benchlib.median([r[key] for r in results[name]])

  print(f'\n{FLAGS.steps} steps, batch 64, three logical CPU devices, '
        f'median of {FLAGS.repeats}:')
  rows = [('program', 'training s', 'steps/s', 'wall s', 'Step 0 at s', 'peak RSS MB',
           'final loss', 'training x', 'wall x')]
  for name, (label, _) in contenders.items():
    train = median(name, 'train_seconds')
    rows.append((label, f'{train:.2f}', f'{FLAGS.steps / train:.0f}',
                 f'{median(name, "wall_seconds"):.2f}', f'{median(name, "first_seconds"):.2f}',
                 f'{median(name, "peak_rss_mb"):.0f}', f'{median(name, "final_loss"):.3g}',
                 f'{train / median("port", "train_seconds"):.2f}',
                 f'{median(name, "wall_seconds") / median("port", "wall_seconds"):.2f}'))
  print(benchlib.text_table(rows))
  print('(training x, wall x: time / the port\'s; above 1 means the port is faster)')
  print(f'port against the document as written: training loop '
        f'{median("tf1", "train_seconds") / median("port", "train_seconds"):.2f}x, '
        f'whole process {median("tf1", "wall_seconds") / median("port", "wall_seconds"):.2f}x, '
        f'first Step line {median("port", "first_seconds") - median("tf1", "first_seconds"):+.2f} s')


if __name__ == '__main__':
  app.run(main)
