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

import _startup  # Quiets TensorFlow's start-up lines; imports tf and tf_mp.
from absl import app
from absl import flags

import tf_mp

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps, as in the document.')
flags.DEFINE_integer('log_every', 100, 'Print `Step: N Loss: X` every this many steps.')
flags.DEFINE_integer('batch_size', 64, 'Examples per step (a multiple of --micro_batches).')
flags.DEFINE_integer('micro_batches', 4, 'Micro-batches per batch (GPipe\'s M).')
flags.DEFINE_bool('remat', False, 'Recompute each stage\'s activations in the backward pass.')
flags.DEFINE_float('learning_rate', 0.001, 'Adam learning rate.')
flags.DEFINE_string('devices', 'auto',
                    'One device per stage, e.g. "cpu:0,cpu:1,cpu:2"; fewer are '
                    'used round-robin; "auto" uses the GPUs, else three logical '
                    'CPU devices.')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial weights.')
flags.DEFINE_string('data', None,
                    'A .npz with x [n, 128] float32 and y [n] integer labels in '
                    '[0, 10); default: the synthetic teacher task.')
flags.DEFINE_integer('report_steps', 3,
                     'Steps traced for the per-device time report; 0 skips the '
                     'balance and time reports.')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = tf_mp.pipeline.PipelineConfig(seed=FLAGS.seed)
  devices = tf_mp.resolve_devices(FLAGS.devices, len(config.stages))  # Before any tensor.
  if FLAGS.report_steps < 0:
    raise tf_mp.TfMpError(f'--report_steps must be >= 0, got {FLAGS.report_steps}')
  if FLAGS.data:
    x, y = tf_mp.load_npz(FLAGS.data)
  else:
    x, y = tf_mp.synthetic_data(FLAGS.seed)

  pipeline = tf_mp.pipeline.build_pipeline(devices, config,
                                  num_micro_batches=FLAGS.micro_batches,
                                  remat=FLAGS.remat)
  pipeline.check_batch_size(FLAGS.batch_size)  # Before anything is traced.
  trainer = tf_mp.Trainer(pipeline, FLAGS.learning_rate)
  print(tf_mp.reports.pipeline_placement(pipeline, trainer), end='\n\n', flush=True)

  def on_log(step, loss_value):
    print('Step:', step, 'Loss:', loss_value, flush=True)

  result = trainer.fit(x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                       log_every=FLAGS.log_every, on_log=on_log)
  print(f'Done: {result.steps} steps, final loss {result.final_loss:.6g}, '
        f'{result.steps_per_second:.1f} steps/s', flush=True)
  if FLAGS.report_steps:
    print()
    print(tf_mp.reports.balance_report(pipeline, batch_size=FLAGS.batch_size), end='\n\n')
    print(tf_mp.reports.device_time_report(pipeline, x[:FLAGS.batch_size], y[:FLAGS.batch_size],
                                   steps=FLAGS.report_steps))


if __name__ == '__main__':
  _startup.run(main)
