"""The source document's model-parallel program, in TensorFlow 2.

Three sub-models on three devices read the same [batch, 128] input; their
outputs are concatenated on the last axis and a head makes 10 logits; Adam
(learning rate 0.001) trains it for 10000 steps, printing the document's
`Step: N Loss: X` line every 100 steps. First it prints where each part really
lives, last a one-line summary.

  python examples/tutorial.py                      # the document's run
  python examples/tutorial.py --devices cpu:0,cpu:1,cpu:2 --steps 500
  python examples/tutorial.py --data my.npz --export_dir /tmp/model
"""

import time

import _startup  # Quiets TensorFlow's start-up lines; imports tf and tf_mp.
from absl import app
from absl import flags
import tensorflow as tf

import tf_mp
from tf_mp.summaries import write_scalar

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps, as in the document.')
flags.DEFINE_integer('log_every', 100, 'Print `Step: N Loss: X` every this many steps.')
flags.DEFINE_integer('batch_size', 64, 'Examples per step.')
flags.DEFINE_float('learning_rate', 0.001, 'Adam learning rate.')
flags.DEFINE_string('devices', 'auto',
                    'One device per sub-model, e.g. "cpu:0,cpu:1,cpu:2" or '
                    '"gpu:0,gpu:1,gpu:2"; "auto" uses the GPUs, else three '
                    'logical CPU devices.')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial weights.')
flags.DEFINE_string('data', None,
                    'A .npz with x [n, 128] float32 and y [n] integer labels in '
                    '[0, 10); default: the synthetic teacher task.')
flags.DEFINE_string('logdir', None, 'Write TensorBoard scalars (loss, steps/s) here.')
flags.DEFINE_string('export_dir', None,
                    'Save the trained model here as a SavedModel (serving: '
                    'features [None, 128] float32 -> logits).')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  devices = tf_mp.resolve_devices(FLAGS.devices, 3)  # Before any tensor exists.
  if FLAGS.data:
    x, y = tf_mp.load_npz(FLAGS.data)
  else:
    x, y = tf_mp.synthetic_data(FLAGS.seed)
  if FLAGS.export_dir:
    tf_mp.check_export_dir(FLAGS.export_dir)

  model = tf_mp.build_model(devices, tf_mp.ModelConfig(seed=FLAGS.seed))
  trainer = tf_mp.Trainer(model, FLAGS.learning_rate)
  print(tf_mp.placement_report(model, trainer), end='\n\n', flush=True)

  writer = tf.summary.create_file_writer(FLAGS.logdir) if FLAGS.logdir else None
  last = {'step': 0, 'time': time.perf_counter()}

  def on_log(step, loss_value):
    print('Step:', step, 'Loss:', loss_value, flush=True)
    if writer:
      now = time.perf_counter()
      with writer.as_default():
        write_scalar('loss', loss_value, step)
        if step > last['step']:
          write_scalar('steps_per_second',
                       (step - last['step']) / (now - last['time']), step)
      last.update(step=step, time=now)

  result = trainer.fit(x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                       log_every=FLAGS.log_every, on_log=on_log)
  if writer:
    writer.flush()
  print(f'Done: {result.steps} steps, final loss {result.final_loss:.6g}, '
        f'{result.steps_per_second:.1f} steps/s')
  if FLAGS.export_dir:
    print(f'SavedModel written to {tf_mp.export_saved_model(model, FLAGS.export_dir)}')


if __name__ == '__main__':
  _startup.run(main)
