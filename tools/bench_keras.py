"""Steps per second of the document's model: plain Keras fit, tf_mp.keras fit, tf_mp.Trainer.

All variants train the same model on the same batches in one process, on
three logical CPU devices, in interleaved rounds (each round times every
variant once, in rotating order, after one warm-up round that traces). Prints
the median steps/s of each variant and its ratios to the Trainer and to plain
Keras.

  plain keras        keras.Model (GradientTape step), no placement
  tf_mp.keras        tf_mp.keras.build_model on cpu:0,1,2 (placed forward and
                     backward), StepLogger(--log_every) attached
  tf_mp.keras spe    the same with compile(steps_per_execution=--log_every);
                     StepLogger still prints every logged step (step_losses)
  tf_mp.Trainer      the core: tf_mp.build_model on cpu:0,1,2, many steps per call

  python tools/bench_keras.py                 # 500 steps x 5 rounds
  python tools/bench_keras.py --steps 200 --rounds 3
"""

import os
import platform
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import tensorflow as tf

import tf_mp
import tf_mp.keras as tk

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 500, 'Steps per timed fit call.')
flags.DEFINE_integer('rounds', 5, 'Timed rounds (medians are reported).')
flags.DEFINE_integer('batch_size', 64, 'Examples per step.')
flags.DEFINE_integer('log_every', 100, 'Logging interval (StepLogger, Trainer.fit).')
DEVICES = ['cpu:0', 'cpu:1', 'cpu:2']


class KerasVariant:
  """Times `model.fit` over the next `steps` of the core's batches."""

  def __init__(self, model, x, y, log):
    self.model, self.x, self.y, self.log = model, x, y, log
    self.step = 0

  def run(self, steps):
    data = tk.step_dataset(self.x, self.y, self.step + steps, FLAGS.batch_size,
                           first_step=self.step)
    callbacks = [tk.StepLogger(FLAGS.log_every, print_fn=lambda line: None)] if self.log else []
    start = time.perf_counter()
    self.model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    seconds = time.perf_counter() - start
    self.step += steps
    return seconds


class TrainerVariant:

  def __init__(self, x, y):
    self.trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES), 0.001)
    self.x, self.y = x, y

  def run(self, steps):
    target = int(self.trainer.step.numpy()) + steps
    start = time.perf_counter()
    self.trainer.fit(self.x, self.y, steps=target, batch_size=FLAGS.batch_size,
                     log_every=FLAGS.log_every, on_log=lambda s, l: None)
    return time.perf_counter() - start


def plain_keras_model():
  """The document's model as a plain keras.Model: same layers, no on_device."""
  unplaced = tk.build_model(None)
  return keras.Model(unplaced.inputs, unplaced.outputs, name='plain')


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')
  tf_mp.ensure_logical_cpus(3)
  x, y = tf_mp.synthetic_data(0)
  spe = keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-8)
  placed_spe = tk.build_model(DEVICES)
  placed_spe.compile(spe, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     steps_per_execution=FLAGS.log_every)
  variants = {
      'plain keras': KerasVariant(tk.compile_document(plain_keras_model()), x, y, False),
      'tf_mp.keras': KerasVariant(tk.compile_document(tk.build_model(DEVICES)), x, y, True),
      'tf_mp.keras spe': KerasVariant(placed_spe, x, y, True),
      'tf_mp.Trainer': TrainerVariant(x, y),
  }
  names = list(variants)
  for name in names:  # warm-up: tracing
    variants[name].run(FLAGS.log_every)
  rates = {name: [] for name in names}
  for r in range(FLAGS.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      rates[name].append(FLAGS.steps / variants[name].run(FLAGS.steps))
  median = {name: statistics.median(v) for name, v in rates.items()}
  print(f'{FLAGS.rounds} rounds x {FLAGS.steps} steps, batch {FLAGS.batch_size}, '
        f'{os.cpu_count()} CPUs, 3 logical CPU devices, TF {tf.__version__}, '
        f'Keras {keras.__version__}, {platform.machine()}')
  header = ('variant', 'steps/s (median)', 'min', 'max', 'step time / Trainer',
            'step time / plain keras')
  rows = [header]
  for name in names:
    rows.append((name, f'{median[name]:.1f}', f'{min(rates[name]):.1f}',
                 f'{max(rates[name]):.1f}',
                 f'{median["tf_mp.Trainer"] / median[name]:.2f}x',
                 f'{median["plain keras"] / median[name]:.2f}x'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  for row in rows:
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |')


if __name__ == '__main__':
  app.run(main)
