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

With --breakdown it times where tf_mp.keras's step time goes instead, one
placed model (compile_document) driven four ways, against the Trainer:

  train_step, in-graph batches   a tf.function looping the model's train_step
                                 over the core's batches gathered in the graph
                                 (as the Trainer's loop does), 100 steps a call
  train_step, tf.data iterator   the same loop reading step_dataset's iterator
  Keras train_function           Keras's multi-step function on that iterator
                                 (steps_per_execution steps a call)
  fit                            model.fit, as the tf_mp.keras variant above

  python tools/bench_keras.py                 # 500 steps x 5 rounds
  python tools/bench_keras.py --steps 200 --rounds 3
  python tools/bench_keras.py --breakdown --rounds 9 --steps 300
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
from tf_mp.data import batch_at

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 500, 'Steps per timed fit call.')
flags.DEFINE_integer('rounds', 5, 'Timed rounds (medians are reported).')
flags.DEFINE_integer('batch_size', 64, 'Examples per step.')
flags.DEFINE_integer('log_every', 100, 'Logging interval (StepLogger, Trainer.fit).')
flags.DEFINE_bool('breakdown', False, 'Time where tf_mp.keras fit spends its step time.')
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


class LoopVariant:
  """Times a tf.function that runs `model.train_step` 100 steps a call.

  `iterator=False`: each step's batch is gathered in the graph (the Trainer's
  way); True: read from `step_dataset`'s iterator, as Keras's fit reads it.
  """

  def __init__(self, model, x, y, iterator):
    self.model, self.x, self.y, self.iterator = model, x, y, iterator
    features, labels = tf.constant(x), tf.constant(y)

    @tf.function
    def steps_from(first, count):
      for i in tf.range(count):
        model.train_step(batch_at(features, labels, first + i, FLAGS.batch_size))

    @tf.function
    def steps_of(iterator, count):
      for _ in tf.range(count):
        model.train_step(next(iterator))

    self.steps_from, self.steps_of = steps_from, steps_of
    self.step = 0

  def run(self, steps):
    calls = [100] * (steps // 100) + ([steps % 100] if steps % 100 else [])
    if self.iterator:
      data = iter(tk.step_dataset(self.x, self.y, self.step + steps, FLAGS.batch_size,
                                  first_step=self.step))
    start = time.perf_counter()
    for count in calls:
      if self.iterator:
        self.steps_of(data, tf.constant(count))
      else:
        self.steps_from(tf.constant(self.step, tf.int64), tf.constant(count, tf.int64))
      self.step += count
    return time.perf_counter() - start


class TrainFunctionVariant(KerasVariant):
  """Times Keras's own multi-step train function on step_dataset's iterator, no fit."""

  def run(self, steps):
    data = iter(tk.step_dataset(self.x, self.y, self.step + steps, FLAGS.batch_size,
                                first_step=self.step))
    self.model.make_train_function()
    calls = -(-steps // self.model.steps_per_execution)
    start = time.perf_counter()
    for _ in range(calls):
      self.model.train_function(data)
    seconds = time.perf_counter() - start
    self.step += steps
    return seconds


def contenders(x, y):
  """name -> variant, the first the reference of the last column."""
  if FLAGS.breakdown:
    placed = tk.compile_document(tk.build_model(DEVICES))
    return {
        'fit': KerasVariant(placed, x, y, True),
        'train_step, in-graph batches': LoopVariant(placed, x, y, False),
        'train_step, tf.data iterator': LoopVariant(placed, x, y, True),
        'Keras train_function': TrainFunctionVariant(placed, x, y, False),
        'tf_mp.Trainer': TrainerVariant(x, y),
    }
  plain = plain_keras_model()
  plain.compile(keras_adam(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return {
      'plain keras': KerasVariant(plain, x, y, False),
      'tf_mp.keras': KerasVariant(tk.compile_document(tk.build_model(DEVICES)), x, y, True),
      'tf_mp.keras spe=1': KerasVariant(
          compile_placed(tk.Adam(learning_rate=0.001, epsilon=1e-8), 1), x, y, True),
      'tf_mp.keras keras Adam': KerasVariant(compile_placed(keras_adam()), x, y, True),
      'tf_mp.Trainer': TrainerVariant(x, y),
  }


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')
  tf_mp.ensure_logical_cpus(3)
  x, y = tf_mp.synthetic_data(0)
  variants = contenders(x, y)
  names = list(variants)
  reference = names[0]
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
        f'{tk.DEFAULT_STEPS_PER_EXECUTION}; load average before/after: {LOAD_BEFORE} / '
        f'{" ".join(f"{a:.1f}" for a in os.getloadavg())}')

  ops = {name: len(v.model.traced_train_graph().get_operations())
         for name, v in variants.items() if isinstance(getattr(v, 'model', None), tk.Model)}
  ops['tf_mp.Trainer'] = len(variants['tf_mp.Trainer'].trainer.traced_step_graph().get_operations())
  print('ops in the traced train step: ' + ', '.join(f'{n} {c}' for n, c in ops.items()))

  def per_round(name, other):  # step time of `name` / step time of `other`, same round
    return statistics.median(b / a for a, b in zip(rates[name], rates[other]))

  header = ('variant', 'steps/s (median)', 'min', 'max', 'step time / Trainer',
            f'step time / {reference}',
            f'same-round ratios (median): / Trainer, / {reference}')
  rows = [header]
  for name in names:
    rows.append((name, f'{median[name]:.1f}', f'{min(rates[name]):.1f}',
                 f'{max(rates[name]):.1f}',
                 f'{median["tf_mp.Trainer"] / median[name]:.2f}x',
                 f'{median[reference] / median[name]:.2f}x',
                 f'{per_round(name, "tf_mp.Trainer"):.2f}x, {per_round(name, reference):.2f}x'))
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  for row in rows:
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |')


if __name__ == '__main__':
  app.run(main)
