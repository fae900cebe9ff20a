"""Steps per second of the document's model: plain Keras fit, tf_mp.keras fit, tf_mp.Trainer.

All variants train the same model on the same batches in one process, on
three logical CPU devices, in interleaved rounds (each round times every
variant once, in rotating order, after one warm-up round that traces). Prints
the median steps/s of each variant and its ratios to the Trainer and to plain
Keras (ratios of medians, and the median over rounds of the same-round ratio).

  plain keras            keras.Model (GradientTape step), no placement,
                         keras.optimizers.Adam, Keras's compile defaults
                         (one step per execution)
  tf_mp.keras            tf_mp.keras.build_model on cpu:0,1,2 (placed forward
                         and backward) compiled with compile_document:
                         tf_mp.keras.Adam, tf_mp.keras.Model's default
                         steps_per_execution; StepLogger(--log_every) attached
  tf_mp.keras spe=1      the same with compile(steps_per_execution=1):
                         Keras's per-batch callback calls
  tf_mp.keras keras Adam the same as tf_mp.keras with keras.optimizers.Adam
                         (Keras's op-by-op update)
  tf_mp.Trainer          the core: tf_mp.build_model on cpu:0,1,2, many steps per call

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
LOAD_BEFORE = ' '.join(f'{a:.1f}' for a in os.getloadavg())


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


def compile_placed(optimizer, steps_per_execution=None):
  model = tk.build_model(DEVICES)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                steps_per_execution=steps_per_execution)
  return model


def keras_adam():
  return keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-8)


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')
  tf_mp.ensure_logical_cpus(3)
  x, y = tf_mp.synthetic_data(0)
  plain = plain_keras_model()
  plain.compile(keras_adam(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  placed = tk.compile_document(tk.build_model(DEVICES))
  variants = {
      'plain keras': KerasVariant(plain, x, y, False),
      'tf_mp.keras': KerasVariant(placed, x, y, True),
      'tf_mp.keras spe=1': KerasVariant(
          compile_placed(tk.Adam(learning_rate=0.001, epsilon=1e-8), 1), x, y, True),
      'tf_mp.keras keras Adam': KerasVariant(compile_placed(keras_adam()), x, y, True),
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
        f'Keras {keras.__version__}, {platform.machine()}; tf_mp.keras steps_per_execution '
        f'{placed.steps_per_execution}; load average before/after: {LOAD_BEFORE} / '
        f'{" ".join(f"{a:.1f}" for a in os.getloadavg())}')

  def per_round(name, other):  # step time of `name` / step time of `other`, same round
    return statistics.median(b / a for a, b in zip(rates[name], rates[other]))

  header = ('variant', 'steps/s (median)', 'min', 'max', 'step time / Trainer',
            'step time / plain keras', 'same-round ratios (median): / Trainer, / plain keras')
  rows = [header]
  for name in names:
    rows.append((name, f'{median[name]:.1f}', f'{min(rates[name]):.1f}',
                 f'{max(rates[name]):.1f}',
                 f'{median["tf_mp.Trainer"] / median[name]:.2f}x',
                 f'{median["plain keras"] / median[name]:.2f}x',
                 f'{per_round(name, "tf_mp.Trainer"):.2f}x, {per_round(name, "plain keras"):.2f}x'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  for row in rows:
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |')


if __name__ == '__main__':
  app.run(main)
