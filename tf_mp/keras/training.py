"""Feeding and logging `fit` as the document does: the core's batches, `Step: N Loss: X`."""

from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from tf_mp.checks import (finite_number, instance_of, non_negative_int, optional_callable,
                          positive_int)
from tf_mp.data import batch_at, check_arrays
from tf_mp.errors import TfMpError
from tf_mp.keras.optimizers import Adam
from tf_mp.memory import check_batch_within


def step_dataset(x, y, steps: int, batch_size: int = 64,
                 first_step: int = 0) -> tf.data.Dataset:
  """The batches of steps `first_step .. steps-1`, those `tf_mp.Trainer.fit` uses.

  Step s yields rows `tf_mp.batch_indices(s, batch_size, len(x))`, so
  `model.fit(step_dataset(x, y, steps))` sees exactly the core's batches in
  order. Pass it to `fit` with `epochs=1` (it has `steps - first_step`
  elements).

  Args:
    x: float32 `[n, features]`; y: integer labels `[n]`.
    steps: the step after the last one.
    batch_size: rows per step (the global batch under a strategy).
    first_step: the first step (resuming).

  Returns:
    A `tf.data.Dataset` of `(features [batch_size, features], labels
    [batch_size])`.

  Raises:
    TfMpError: bad arrays or step range, or a batch larger than the data.
  """
  x, y = check_arrays(x, y, 'step_dataset', input_units=None, num_classes=None)
  steps = positive_int('step_dataset: steps', steps)
  if steps > np.iinfo(np.int64).max:  # The step counter and the range are int64.
    raise TfMpError(f'step_dataset: steps {steps} is larger than 2^63 - 1, the largest '
                    'step an int64 counter holds')
  batch_size = positive_int('step_dataset: batch_size', batch_size)
  check_batch_within(batch_size, len(x), 'step_dataset: ')
  first_step = non_negative_int('step_dataset: first_step', first_step)
  if not 0 <= first_step < steps:
    raise TfMpError(f'step_dataset: first_step {first_step} is not in [0, steps={steps})')
  features, labels = tf.constant(x), tf.constant(y)
  return tf.data.Dataset.range(first_step, steps).map(
      lambda step: batch_at(features, labels, step, batch_size)).prefetch(2)


class StepLogger(keras.callbacks.Callback):
  """Prints the document's `Step: N Loss: X` every `every` steps of `fit`.

  N counts the optimizer's steps (so it continues across epochs and resumed
  runs) and X is that step's own loss, the `step_loss` that
  `tf_mp.keras.Model.train_step` returns, printed as the core prints it (a
  numpy float32). Keras's `loss` is a running mean over the epoch, which is not
  the document's number. With `compile(steps_per_execution=k)` Keras reports
  once per k steps; the model then also returns every step's loss
  (`step_losses`), so the same lines come out, k steps at a time.
  """

  def __init__(self, every: int = 100,
               print_fn: Optional[Callable[[str], None]] = None):
    super().__init__()
    self.every = positive_int('StepLogger: every', every)
    self.print_fn = optional_callable('StepLogger: print_fn', print_fn)
    self.logged = []  # (step, loss) pairs printed so far.
    self._step = None

  def on_train_begin(self, logs=None):
    optimizer = getattr(self.model, 'optimizer', None)
    iterations = getattr(optimizer, 'iterations', None)
    self._step = int(iterations.numpy()) if iterations is not None else 0

  def on_train_batch_end(self, batch, logs=None):
    logs = logs or {}
    first = self._step
    if 'step_losses' in logs:  # steps_per_execution > 1: several steps at once
      losses = np.asarray(logs['step_losses'], np.float32)
      done = int(self.model.optimizer.iterations.numpy())
      steps = {s: losses[s % len(losses)] for s in range(first, done)}
    elif 'step_loss' in logs:
      done = first + 1
      steps = {first: logs['step_loss']}
    else:
      raise TfMpError('StepLogger: the logs have no step_loss; train a '
                      'tf_mp.keras.Model (its train_step returns it)')
    self._step = done
    for step, loss in steps.items():
      if step % self.every == 0:
        self._print(step, np.float32(loss))

  def _print(self, step: int, loss: np.float32) -> None:
    self.logged.append((step, loss))
    if self.print_fn is not None:
      self.print_fn(f'Step: {step} Loss: {loss}')
    else:
      print('Step:', step, 'Loss:', loss, flush=True)


def compile_document(model, learning_rate: float = 0.001):
  """Compiles `model` as the document trains: Adam (TF1's epsilon 1e-8), mean softmax loss.

  `tf_mp.keras.Adam(learning_rate, epsilon=1e-8)` (Keras's Adam, updating
  with TF1's fused kernel) computes TF1's update (`lr * sqrt(1 - beta2^t) /
  (1 - beta1^t) * m / (sqrt(v) + epsilon)`) and the loss is
  `SparseCategoricalCrossentropy(from_logits=True)`, the mean over the batch
  of `tf.nn.sparse_softmax_cross_entropy_with_logits`. The rest is `compile`'s
  defaults (for a `tf_mp.keras.Model`, several steps per execution). Call it
  inside the strategy's scope when there is one.

  Returns:
    The model.

  Raises:
    TfMpError: `model` is not a Keras model, or `learning_rate` is not a
      finite number > 0.
  """
  instance_of('model', model, keras.Model, 'a Keras model, e.g. tf_mp.keras.build_model()')
  learning_rate = finite_number('learning_rate', learning_rate, positive=True)
  model.compile(
      optimizer=Adam(learning_rate=learning_rate, epsilon=1e-8),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model
