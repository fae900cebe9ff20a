"""Benchmark of the pipeline form: M micro-batches, with and without remat, side by side.

For M in --micro_batches and remat off/on, on three logical CPU devices (or the
devices given), one run measures:
  * step time: median wall time of one training step (`Trainer.train_step`),
    interleaved over --rounds so that load from other processes hits every
    configuration alike; `vs M=1` is the ratio to M=1 with the same remat.
  * measured bubble: mean idle fraction of the devices over a profiler-traced
    window (`tf_mp.reports.device_time_report`), beside GPipe's (K-1)/(M+K-1).
  * peak memory: the CPU allocator's peak during one training step above what
    was allocated before it (`tf.config.experimental.get_memory_info`; all
    logical CPU devices share one allocator, so this is the whole process's
    step-time memory: activations, gradients and temporaries).

The stages are made equal (--layers_per_stage dense layers of --width each, the
last stage adds a small 10-logit layer), since GPipe's formula assumes
balanced stages.

  python tools/bench_pipeline.py
  python tools/bench_pipeline.py --intra_op_threads 0 --width 512
"""

import os
import sys
import time

import benchlib  # pylint: disable=g-bad-import-order  (first: quiets TensorFlow)

benchlib.enable_cpu_memory_stats()  # The step's peak memory.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import tf_mp  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_mp import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list('micro_batches', ['1', '2', '4', '8'], 'The values of M to compare.')
cli.define_batch_size(2048, 'Examples per step (a multiple of every M).')
flags.DEFINE_integer('width', 256, 'Width of the input and of every hidden layer.')
flags.DEFINE_integer('layers_per_stage', 4, 'Dense layers of --width in each stage.')
cli.define_devices('One device per stage.', default='cpu:0,cpu:1,cpu:2')
cli.define_steps(2, 'Timed steps per configuration per round.')
flags.DEFINE_integer('rounds', 5, 'Interleaved rounds over all configurations.', lower_bound=1)
flags.DEFINE_integer('trace_steps', 2, 'Profiler-traced steps for the bubble.')
flags.DEFINE_integer('intra_op_threads', 1,
                     'Threads one op may use (0: TensorFlow\'s default, all cores). '
                     '1 makes each op a single-core job, as if each device had '
                     'its own core, so that overlapping stages can use more cores.')
cli.define_seed('Seed of the weights and the batch.')


def _config(width: int, layers: int, stages: int) -> tf_mp.pipeline.PipelineConfig:
  body = (width,) * layers
  return tf_mp.pipeline.PipelineConfig(
      input_units=width,
      stages=tuple(body if k < stages - 1 else body + (10,) for k in range(stages)),
      seed=FLAGS.seed)


def _step_ms(trainer, x, y, steps: int) -> list:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    trainer.train_step(x, y).numpy()
    times.append((time.perf_counter() - start) * 1e3)
  return times


def _peak_step_bytes(trainer, x, y) -> int:
  before = tf.config.experimental.get_memory_info('CPU:0')['current']
  tf.config.experimental.reset_memory_stats('CPU:0')
  trainer.train_step(x, y).numpy()
  return tf.config.experimental.get_memory_info('CPU:0')['peak'] - before


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')  # One tf.function per trainer: retracing notes.
  logging.set_verbosity(logging.ERROR)
  if FLAGS.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
  names = tf_mp.resolve_devices(FLAGS.devices, 3)
  ms = [int(m) for m in FLAGS.micro_batches]
  config = _config(FLAGS.width, FLAGS.layers_per_stage, len(names))
  rng = np.random.default_rng(FLAGS.seed)
  x = tf.constant(rng.normal(size=(FLAGS.batch_size, FLAGS.width)).astype(np.float32))
  y = tf.constant(rng.integers(0, 10, size=FLAGS.batch_size).astype(np.int32))

  print(f'# {os.cpu_count()} CPU cores, devices {",".join(names)}, '
        f'intra-op threads {FLAGS.intra_op_threads or "default"}, '
        f'inter-op threads {tf.config.threading.get_inter_op_parallelism_threads() or "default"}')
  print(f'# stages {config.stages} on input width {config.input_units}, '
        f'batch {FLAGS.batch_size}; load average at start {os.getloadavg()[0]:.2f}')
  sys.stdout.flush()

  runs = {}
  for remat in (False, True):
    for m in ms:
      pipeline = tf_mp.pipeline.build_pipeline(names, config, num_micro_batches=m, remat=remat)
      trainer = tf_mp.Trainer(pipeline)
      _step_ms(trainer, x, y, 2)  # Trace and warm up.
      runs[(m, remat)] = {'trainer': trainer, 'pipeline': pipeline}

  times = benchlib.interleaved(
      {key: (lambda t=run['trainer']: _step_ms(t, x, y, FLAGS.steps))
       for key, run in runs.items()}, FLAGS.rounds)
  for key, run in runs.items():
    run['times'] = [ms for round_times in times[key] for ms in round_times]
  for key, run in runs.items():
    run['peak'] = _peak_step_bytes(run['trainer'], x, y)
    run['report'] = tf_mp.reports.device_time_report(run['pipeline'], x, y,
                                             steps=FLAGS.trace_steps, warmup=1)

  # At most `parallel` ops run at once (the inter-op pool), so at most that many
  # of the K devices are busy at any moment: the mean idle fraction cannot go
  # below 1 - parallel/K, whatever M is.
  parallel = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()
  floor = max(0.0, 1 - min(parallel, len(names)) / len(names))
  header = ('M', 'remat', 'step ms', 'vs M=1', 'bubble measured', 'GPipe (K-1)/(M+K-1)',
            'difference', f'floor max(GPipe, 1-{parallel}/K)', 'peak step MiB')
  rows = []
  for (m, remat), run in runs.items():
    step = benchlib.median(run['times'])
    base = benchlib.median(runs[(ms[0], remat)]['times'])
    report = run['report']
    rows.append((str(m), 'yes' if remat else 'no', f'{step:.1f}', f'{base / step:.2f}x',
                 f'{report.measured_bubble:.3f}', f'{report.theoretical_bubble:.3f}',
                 f'{report.measured_bubble - report.theoretical_bubble:+.3f}',
                 f'{max(report.theoretical_bubble, floor):.3f}',
                 f'{run["peak"] / 2**20:.1f}'))
  print(benchlib.markdown_table(header, rows))
  print(f'# load average at end {os.getloadavg()[0]:.2f}; `vs M=1` > 1 means faster than M=1')
  for (m, remat), run in runs.items():
    if m == ms[-1] and not remat:
      print()
      print(run['report'])


if __name__ == '__main__':
  app.run(main)
