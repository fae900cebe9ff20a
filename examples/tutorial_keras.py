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

# cli first: from its import on, a Ctrl-C ends the program in one line.
from tf_mp import cli  # pylint: disable=g-bad-import-order

import os
import time

from absl import flags

import tf_mp
from tf_mp.checks import divisible_batch  # no TensorFlow: usable before it loads
from tf_mp.errors import TfMpError
from tf_mp.files import refuse_broken_link  # no TensorFlow either

FLAGS = flags.FLAGS
cli.define_training_flags(steps=10000, batch_size=64, log_every=100,
                          steps_help='Training steps, as in the document.',
                          batch_help='Examples per step (the global batch).')
cli.define_devices('One device per sub-model, e.g. "cpu:0,cpu:1,cpu:2"; "auto" uses '
                   'the GPUs, else three logical CPU devices. With --strategy '
                   'mirrored: device groups separated by ";".')
cli.define_data()
flags.DEFINE_enum('strategy', 'none', ['none', 'mirrored'],
                  'none (pure model parallelism) or mirrored (one replica per '
                  'device group).')
flags.DEFINE_string('save', None, 'Save the trained model here (a .keras file).')


def check_flags():
  """Before TensorFlow loads: the devices, the --save path."""
  cli.check_local_devices(FLAGS.devices)
  if FLAGS.save:
    if not FLAGS.save.endswith('.keras'):
      raise TfMpError(f'--save {FLAGS.save!r} must end in .keras')
    if os.path.isdir(FLAGS.save):
      raise TfMpError(f'--save {FLAGS.save!r} is a directory; expected the path of a '
                      '.keras file')
    if os.path.exists(FLAGS.save) and not os.path.isfile(FLAGS.save):  # It waited on a fifo.
      raise TfMpError(f'--save {FLAGS.save!r} is not a regular file (a device, pipe or '
                      'socket); expected the path of a .keras file')
    # A dangling link failed only at the save, after training.
    refuse_broken_link(FLAGS.save, '--save', 'expected the path of a .keras file')
    cli.check_writable_dir(os.path.dirname(os.path.abspath(FLAGS.save)), 'save')


def main(argv):
  del argv
  import tf_mp.keras as tk  # pylint: disable=g-import-not-at-top  (loads Keras and TF)
  from tf_mp.memory import check_batch_fits  # pylint: disable=g-import-not-at-top

  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices)  # Before any tensor.
  x, y = cli.load_data()
  model = tk.build_model(layout, tf_mp.ModelConfig(seed=FLAGS.seed))
  with layout.scope():
    tk.compile_document(model, FLAGS.learning_rate)
  # What Trainer.fit checks for examples/tutorial.py, before Keras traces a step
  # (a raw AddN shape error, a ResourceExhaustedError or the OOM killer otherwise).
  divisible_batch(FLAGS.batch_size,
                  layout.strategy.num_replicas_in_sync if layout.strategy else 1)
  check_batch_fits(model, x, FLAGS.batch_size)
  if layout.distributed:
    print(layout.describe())
  print(tk.placement_report(model, x[:FLAGS.batch_size], y[:FLAGS.batch_size]),
        end='\n\n', flush=True)

  start = time.perf_counter()
  history = model.fit(tk.step_dataset(x, y, FLAGS.steps, FLAGS.batch_size),
                      epochs=1, verbose=0, shuffle=False,
                      callbacks=[tk.StepLogger(FLAGS.log_every)])
  seconds = time.perf_counter() - start
  print(f'Done: {FLAGS.steps} steps, final loss '
        f'{history.history["step_loss"][-1]:.6g}, {FLAGS.steps / seconds:.1f} steps/s')
  if FLAGS.save:
    model.save(FLAGS.save)
    print(f'Model written to {FLAGS.save}')


if __name__ == '__main__':
  cli.run(main, __doc__, check_flags)
