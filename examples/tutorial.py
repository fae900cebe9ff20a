"""The source document's model-parallel program, in TensorFlow 2.

Three sub-models on three devices read the same [batch, 128] input; their
outputs are concatenated on the last axis and a head makes 10 logits; Adam
(learning rate 0.001) trains it for 10000 steps, printing the document's
`Step: N Loss: X` line every 100 steps. First it prints where each part really
lives, last a one-line summary.

  python examples/tutorial.py                      # the document's run
  python examples/tutorial.py --devices cpu:0,cpu:1,cpu:2 --steps 500
  python examples/tutorial.py --data my.npz --export_dir /tmp/model
  python examples/tutorial.py --strategy mirrored \\
      --devices "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5" --checkpoint_dir /tmp/ckpt
"""

import os
import time

import _startup  # Quiets TensorFlow's start-up lines; imports tf and tf_mp.
from absl import app
from absl import flags
from absl import logging
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
                    'logical CPU devices. With --strategy mirrored: device '
                    'groups, e.g. "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5" (two '
                    'replicas); "auto" makes groups of three of what exists.')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial weights.')
flags.DEFINE_string('data', None,
                    'A .npz with x [n, 128] float32 and y [n] integer labels in '
                    '[0, 10); default: the synthetic teacher task.')
flags.DEFINE_string('logdir', None, 'Write TensorBoard scalars (loss, steps/s) here.')
flags.DEFINE_string('export_dir', None,
                    'Save the trained model here as a SavedModel (serving: '
                    'features [None, 128] float32 -> logits).')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")
flags.DEFINE_string('strategy', 'none',
                    'none (pure model parallelism), mirrored (one replica per '
                    'device group, groups separated by ";" in --devices) or '
                    'multi_worker (one replica per worker, from TF_CONFIG). '
                    '--batch_size is the global batch.')
flags.DEFINE_string('checkpoint_dir', None,
                    'Save model, Adam state and step here; a rerun of the same '
                    'command resumes from the newest checkpoint.')
flags.DEFINE_integer('checkpoint_every', 1000, 'Save a checkpoint every this many steps.')
flags.DEFINE_float('collective_timeout', 60,
                   'multi_worker: seconds a collective waits for a dead worker '
                   'before the run fails (0: forever).')
flags.DEFINE_enum('concat', 'tf', ['tf', 'custom', 'auto'],
                  'How the sub-model outputs are joined: tf (tf.concat), '
                  'custom (the TfMpConcat op, built by `make ops`), auto (the '
                  'op when it is built, else tf.concat after a warning). The '
                  'losses are identical either way.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.verbose:
    # tf.distribute (TF's logger) and the checkpoint saver (absl) log at INFO.
    tf.get_logger().setLevel('ERROR')
    logging.set_verbosity(logging.WARNING)
  # Before any tensor exists: devices, groups and the cluster are set up here.
  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices,
                                 tf_config=os.environ.get('TF_CONFIG'),
                                 collective_timeout=FLAGS.collective_timeout)
  if FLAGS.data:
    x, y = tf_mp.load_npz(FLAGS.data)
  else:
    x, y = tf_mp.synthetic_data(FLAGS.seed)
  if FLAGS.export_dir:
    tf_mp.check_export_dir(FLAGS.export_dir)

  with layout.scope():
    model = tf_mp.build_model(
        layout.devices, tf_mp.ModelConfig(seed=FLAGS.seed, concat=FLAGS.concat))
  trainer = tf_mp.Trainer(model, FLAGS.learning_rate, strategy=layout)
  if layout.distributed:
    print(layout.describe(), end='\n\n', flush=True)
  else:
    print(tf_mp.placement_report(model, trainer), end='\n\n', flush=True)
  checkpoints = None
  if FLAGS.checkpoint_dir:
    checkpoints = tf_mp.resume_training(
        FLAGS.checkpoint_dir, trainer, layout,
        log=lambda line: print(line, flush=True))
  if int(trainer.step.numpy()) >= FLAGS.steps:
    print(f'Nothing to train: already at step {int(trainer.step.numpy())} of '
          f'{FLAGS.steps}')
    return

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
                       log_every=FLAGS.log_every, on_log=on_log,
                       checkpoint_every=FLAGS.checkpoint_every if checkpoints else None,
                       on_checkpoint=checkpoints.save if checkpoints else None)
  if writer:
    writer.flush()
  print(f'Done: {result.steps} steps, final loss {result.final_loss:.6g}, '
        f'{result.steps_per_second:.1f} steps/s')
  if FLAGS.export_dir:
    print(f'SavedModel written to {tf_mp.export_saved_model(model, FLAGS.export_dir)}')


if __name__ == '__main__':
  _startup.run(main)
