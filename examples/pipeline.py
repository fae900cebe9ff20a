"""The document's sequential form: stages in sequence on devices, GPipe-style.

Three stages, 128 -> 256 -> 256 -> 10, stage k on device k. Each batch is split
into --micro_batches micro-batches so the stages overlap; their gradients are
summed into one Adam update per batch (the same result as full-batch
training). Prints where each stage lives, the document's `Step: N Loss: X`
lines, then the stage balance and the per-device busy/idle/bubble report from a
short profiler trace.

  python examples/pipeline.py --steps 1000
  python examples/pipeline.py --micro_batches 8 --remat --devices cpu:0,cpu:1,cpu:2
"""

# cli first: from its import on, a Ctrl-C ends the program in one line.
from tf_mp import cli  # pylint: disable=g-bad-import-order

from absl import flags

import tf_mp

FLAGS = flags.FLAGS
cli.define_training_flags(steps=10000, batch_size=64, log_every=100,
                          steps_help='Training steps, as in the document.',
                          batch_help='Examples per step (a multiple of --micro_batches).')
cli.define_devices('One device per stage, e.g. "cpu:0,cpu:1,cpu:2"; fewer are used '
                   'round-robin; "auto" uses the GPUs, else three logical CPU devices.')
cli.define_data()
flags.DEFINE_integer('micro_batches', 4, "Micro-batches per batch (GPipe's M).", lower_bound=1)
flags.DEFINE_bool('remat', False, "Recompute each stage's activations in the backward pass.")
# A profiler trace is held in memory: a few steps show the pattern.
MAX_REPORT_STEPS = 100
flags.DEFINE_integer('report_steps', 3, 'Steps traced for the per-device time report '
                     f'(at most {MAX_REPORT_STEPS}); 0 skips the balance and time reports.',
                     lower_bound=0, upper_bound=MAX_REPORT_STEPS)


def check_flags():
  """What can be checked before TensorFlow loads."""
  cli.check_local_devices(FLAGS.devices)


def main(argv):
  del argv
  config = tf_mp.pipeline.PipelineConfig(seed=FLAGS.seed)
  cli.check_device_count(FLAGS.devices, len(config.stages), 'stages')
  devices = tf_mp.resolve_devices(FLAGS.devices, len(config.stages))  # Before any tensor.
  x, y = cli.load_data()
  pipeline = tf_mp.pipeline.build_pipeline(devices, config, num_micro_batches=FLAGS.micro_batches,
                                  remat=FLAGS.remat)
  pipeline.check_batch_size(FLAGS.batch_size)  # Before anything is traced.
  trainer = tf_mp.Trainer(pipeline, FLAGS.learning_rate)
  print(tf_mp.reports.pipeline_placement(pipeline, trainer), end='\n\n', flush=True)
  with cli.stop_on_signals(trainer) as stop:
    result = trainer.fit(x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                         log_every=FLAGS.log_every, on_log=cli.StepLogger(),
                         should_stop=stop.requested)
  print(cli.done_line(result), flush=True)
  if FLAGS.report_steps:
    print()
    print(tf_mp.reports.balance_report(pipeline, batch_size=FLAGS.batch_size), end='\n\n')
    print(tf_mp.reports.device_time_report(pipeline, x[:FLAGS.batch_size], y[:FLAGS.batch_size],
                                   steps=FLAGS.report_steps))


if __name__ == '__main__':
  cli.run(main, __doc__, check_flags)
