"""Measures how far tf_mp is from the document's program run as TF1 code.

For each of --runs fresh random data sets, runs `tools/reference/tf1_program.py`
once (a subprocess) and compares the port, loaded from that program's initial
checkpoint with `tf_mp.compat.v1.load_tf1_checkpoint`, against it: forward logits,
per-variable gradients, one Adam step, and per-step losses over --steps Adam
steps (see `tools/reference/tf1_oracle.py`). Prints the largest difference of
each check over all runs beside its tolerance, the same for ports that deviate
on purpose (Keras' epsilon 1e-7, learning rate 0.0011, concat order reversed),
and where each sub-model's ops run in both programs.

  python tools/oracle_report.py            # 3 runs, 200 steps
  python tools/oracle_report.py --runs 1 --nodeviations
  python tools/oracle_report.py --devices gpu:0,gpu:1,gpu:2   # the port on GPUs
  TF_MP_CPU_THREADS=matched python tools/oracle_report.py --tf1_pools same

The port runs with the thread pools of `TF_MP_CPU_THREADS` (default `exact`);
the TF1 program with TensorFlow's default session, as the document writes it,
or with `--tf1_pools same` the port's pools (an engine-for-engine comparison:
`matched` pools round one product differently from the default ones, see
docs/benchmarks.md).
"""

import functools
import os
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools', 'reference'))

import benchlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import tf_mp  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_mp import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_mp.devices import THREADS_ENV, short_device_name, thread_mode  # pylint: disable=g-import-not-at-top,wrong-import-position
import tf1_oracle  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_integer('runs', 3, 'Fresh random data sets (one TF1 run each).')
cli.define_steps(200, 'Adam steps whose losses are compared.')
flags.DEFINE_integer('examples', 1024, 'Rows of each random data set.')
flags.DEFINE_integer('seed', None, 'Seed of the first data set (default: random); '
                     'run r uses seed + r.')
flags.DEFINE_bool('deviations', True, 'Also measure the deliberately wrong ports.')
flags.DEFINE_enum('tf1_pools', 'as_written', ['as_written', 'same'],
                  "The TF1 program's thread pools: as_written (TensorFlow's default "
                  "session, as the document) or same (the port's, from TF_MP_CPU_THREADS).")
cli.define_devices("Devices of the ports' sub-models (e.g. gpu:0,gpu:1,gpu:2); the TF1 "
                   'program always uses cpu:0-2.', default='cpu:0,cpu:1,cpu:2')

_CHECKS = {
    'forward': 'forward logits, max abs diff',
    'gradients': 'gradients, max rel diff (worst variable)',
    'one_step': 'one Adam step update, max rel diff',
    'loss_0_10': 'loss drift, steps 0-10, max rel',
    'loss_0_99': 'loss drift, steps 0-99, max rel',
    'loss_all': 'loss drift, all steps, max rel',
}


def _table(rows) -> str:
  return benchlib.text_table(rows, right_align_from=len(rows[0]))  # All left-aligned.


def _indices(counts: dict) -> str:
  return ','.join(f'cpu:{i} ({n})' for i, n in sorted(counts.items())) or '-'


def main(argv):
  del argv
  for name, value in (('runs', FLAGS.runs), ('examples', FLAGS.examples)):
    if value < 1:
      raise tf_mp.TfMpError(f'--{name} must be >= 1, got {value}')
  mode = thread_mode()
  pools = benchlib.TF1_POOLS[mode] if FLAGS.tf1_pools == 'same' else ()
  tf_mp.ensure_logical_cpus(3)
  # Every comparison builds a fresh port, so TensorFlow warns about retracing.
  tf.get_logger().setLevel('ERROR')
  seed = FLAGS.seed
  if seed is None:
    seed = int(np.random.SeedSequence().entropy % (2**31))
  devices = tf_mp.resolve_devices(FLAGS.devices, 3)
  ports = {'port': functools.partial(tf1_oracle.make_port, devices)}
  if FLAGS.deviations:
    ports.update({name: functools.partial(port, devices)
                  for name, (port, _) in tf1_oracle.DEVIATIONS.items()})
  worst = {name: dict.fromkeys(_CHECKS, 0.0) for name in ports}
  reference = None
  with tempfile.TemporaryDirectory() as work_dir:
    for run in range(FLAGS.runs):
      x, y = tf1_oracle.random_data(seed + run, FLAGS.examples)
      reference = tf1_oracle.run_tf1_program(os.path.join(work_dir, str(run)),
                                             x, y, steps=FLAGS.steps, pools=pools)
      for name, port in ports.items():
        measured = tf1_oracle.compare(reference, port).max_differences()
        for check, value in measured.items():
          worst[name][check] = max(worst[name][check], value)
      print(f'run {run + 1}/{FLAGS.runs} (data seed {seed + run}) done', flush=True)

  tf1_pools = ('the port\'s pools' if FLAGS.tf1_pools == 'same' else
               "TensorFlow's default session")
  print(f'\nTF1 program (cpu:0-2, {tf1_pools}) vs tf_mp ({FLAGS.devices}, '
        f'{THREADS_ENV}={mode}): {FLAGS.runs} runs, '
        f'data seeds {seed}..{seed + FLAGS.runs - 1}, {FLAGS.examples} examples, '
        f'batch 64, {FLAGS.steps} Adam steps; largest difference over the runs')
  rows = [('check', 'tolerance', *ports)]
  for check, label in _CHECKS.items():
    rows.append((label, f'{tf1_oracle.TOLERANCES[check]:.0e}',
                 *(f'{worst[name][check]:.2e}' +
                   ('' if worst[name][check] <= tf1_oracle.TOLERANCES[check] else ' FAIL')
                   for name in ports)))
  print(_table(rows))

  model, trainer = tf1_oracle.make_port(devices)
  report = tf_mp.placement_report(model, trainer)
  rows = [('sub-model', 'TF1 forward (requested)', 'TF1 backward (placed at run time)',
           'port forward+backward (requested devices)')]
  for k in range(1, len(model.sub_models) + 1):
    scope = f'sub_model_{k}'
    rows.append((scope, _indices(reference.tf1_device_indices(scope)),
                 _indices(reference.tf1_device_indices(scope, placed=True,
                                                       backward=True)),
                 ', '.join(sorted({short_device_name(d) for d in report[scope].op_devices}))))
  print('\nWhere each sub-model runs (op counts in parentheses)')
  print(_table(rows))


def run_main(argv):
  try:
    main(argv)
  except tf_mp.TfMpError as e:
    sys.exit(f'oracle_report.py: {e}')


if __name__ == '__main__':
  app.run(run_main)
