"""The source document's model-parallel program, through Keras 3's `model.fit`.

The model of examples/tutorial.py as a `tf_mp.keras.Model`: three sub-models
on three devices, concat, head; Keras's Adam with TF1's settings (learning
rate 0.001, epsilon 1e-8); the document's `Step: N Loss: X` every 100 steps.
First it prints where each part really runs (read from the traced Keras train
step), last a one-line summary. With the same --seed it trains on the same
batches, from the same initial weights, as examples/tutorial.py.

  python examples/tutorial_keras.py                    # the document's run
  python examples/tutorial_keras.py --devices cpu:0,cpu:1,cpu:2 --steps 500
  python examples/tutorial_keras.py --save /tmp/model.keras
  python examples/tutorial_keras.py --strategy mirrored \\
      --devices "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5"
"""

import os
import time

import _startup  # Quiets TensorFlow's start-up lines; imports tf and tf_mp.
from absl import flags
from absl import logging
import tensorflow as tf

import tf_mp
import tf_mp.keras as tk

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps, as in the document.')
flags.DEFINE_integer('log_every', 100, 'Print `Step: N Loss: X` every this many steps.')
flags.DEFINE_integer('batch_size', 64, 'Examples per step (the global batch).')
flags.DEFINE_float('learning_rate', 0.001, 'Adam learning rate.')
flags.DEFINE_string('devices', 'auto',
                    'One device per sub-model, e.g. "cpu:0,cpu:1,cpu:2"; "auto" '
                    'uses the GPUs, else three logical CPU devices. With '
                    '--strategy mirrored: device groups separated by ";".')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial weights.')
flags.DEFINE_string('data', None,
                    'A .npz with x [n, 128] float32 and y [n] integer labels in '
                    '[0, 10); default: the synthetic teacher task.')
flags.DEFINE_enum('strategy', 'none', ['none', 'mirrored'],
                  'none (pure model parallelism) or mirrored (one replica per '
                  'device group).')
flags.DEFINE_string('save', None, 'Save the trained model here (a .keras file).')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


def main(argv):
  if len(argv) > 1:
    raise tf_mp.TfMpError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.verbose:
    tf.get_logger().setLevel('ERROR')
    logging.set_verbosity(logging.WARNING)
  if FLAGS.save and not FLAGS.save.endswith('.keras'):
    raise tf_mp.TfMpError(f'--save {FLAGS.save!r} must end in .keras')
  if FLAGS.save and not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.save))):
    raise tf_mp.TfMpError(f'--save {FLAGS.save!r}: its directory does not exist')
  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices)
  x, y = tf_mp.load_npz(FLAGS.data) if FLAGS.data else tf_mp.synthetic_data(FLAGS.seed)

  model = tk.build_model(layout, tf_mp.ModelConfig(seed=FLAGS.seed))
  with layout.scope():
    tk.compile_document(model, FLAGS.learning_rate)
  if layout.distributed:
    print(layout.describe())
  print(tk.placement_report(model, x[:FLAGS.batch_size], y[:FLAGS.batch_size]),
        end='\n\n', flush=True)

  logger = tk.StepLogger(FLAGS.log_every)
  start = time.perf_counter()
  history = model.fit(tk.step_dataset(x, y, FLAGS.steps, FLAGS.batch_size),
                      epochs=1, verbose=0, shuffle=False, callbacks=[logger])
  seconds = time.perf_counter() - start
  final = history.history['step_loss'][-1]
  print(f'Done: {FLAGS.steps} steps, final loss {final:.6g}, '
        f'{FLAGS.steps / seconds:.1f} steps/s')
  if FLAGS.save:
    model.save(FLAGS.save)
    print(f'Model written to {FLAGS.save}')


if __name__ == '__main__':
  _startup.run(main)
