"""Training with Adam: one step for user code, and a fast loop of many steps per call."""

import contextlib
import dataclasses
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_mp.adam import Adam
from tf_mp.data import batch_at, check_arrays
from tf_mp.devices import device_scope
from tf_mp.errors import TfMpError, TrainingDivergedError
from tf_mp.strategies import COLLECTIVE_FAILURES, WorkerLostError


def sparse_softmax_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Mean sparse softmax cross-entropy: logits `[batch, classes]`, labels `[batch]`."""
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                     logits=logits))


@dataclasses.dataclass
class TrainResult:
  """What `Trainer.fit` did: the logged `(step, loss)` pairs and the speed."""
  first_step: int
  last_step: int
  final_loss: float
  logged: List[Tuple[int, float]]
  seconds: float

  @property
  def steps(self) -> int:
    return self.last_step - self.first_step + 1

  @property
  def steps_per_second(self) -> float:
    return self.steps / self.seconds if self.seconds > 0 else float('inf')


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise TfMpError(f'{name} must be a positive integer, got {value!r}')
  return int(value)


class Trainer:
  """Trains a model from `build_model` (or any module mapping features to logits).

  The loss is the mean sparse softmax cross-entropy, computed on the model's
  `output_device`. Gradients are taken with `tf.gradients`, which colocates each
  gradient op with its forward op, so each sub-model's backward pass runs on the
  sub-model's device (a `GradientTape` would leave them unplaced: see the README).
  The optimizer is `tf_mp.Adam`, TF1's `AdamOptimizer` (epsilon 1e-8).

  Attributes:
    model: the model being trained.
    optimizer: its `tf_mp.Adam`.
    step: int64 variable, the number of steps taken so far.
  """

  def __init__(self,
               model: tf.Module,
               learning_rate: float = 0.001,
               *,
               beta1: float = 0.9,
               beta2: float = 0.999,
               epsilon: float = 1e-8,
               loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] = sparse_softmax_loss,
               strategy=None):
    self.model = model
    self.loss_fn = loss_fn
    # A `tf_mp.StrategyLayout` with a tf.distribute strategy, or None.
    self.strategy = strategy if strategy is not None and strategy.distributed else None
    with self.strategy.scope() if self.strategy else contextlib.nullcontext():
      if self.strategy:
        _check_created_in_scope(model, self.strategy)
      self.optimizer = Adam(learning_rate, beta1, beta2, epsilon)
      self.optimizer.build(model.trainable_variables)
      with tf.init_scope():
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    if self.strategy:
      self._train_step = tf.function(self._distributed_step_fn)
      self._run_steps = tf.function(self._distributed_run_steps_fn)
    else:
      self._train_step = tf.function(self._step_fn)
      self._run_steps = tf.function(self._run_steps_fn)

  @property
  def input_units(self) -> int:
    return self.model.config.input_units

  @property
  def num_classes(self) -> int:
    return self.model.config.num_classes

  def check_data(self, features, labels, source: str):
    """Checks concrete features and labels (subclasses for other data override it)."""
    return check_arrays(features, labels, source, self.input_units, self.num_classes)

  def _check_batch_size(self, batch_size: int) -> None:
    """The model's own batch-size rule (a pipeline needs a multiple of M), if any."""
    check = getattr(self.model, 'check_batch_size', None)
    if check is not None:
      check(batch_size)

  def compute_loss(self, features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The scalar training loss of one batch (no update)."""
    logits = self.model(features)
    with device_scope(getattr(self.model, 'output_device', None)), \
        tf.name_scope('loss'):
      return self.loss_fn(logits, labels)

  def _step_fn(self, features, labels):
    variables = self.model.trainable_variables
    # A model with its own gradient path (a `tf_mp.Pipeline` accumulates over
    # micro-batches) returns grads aligned with its `trainable_variables`.
    own_gradients = getattr(self.model, 'loss_and_gradients', None)
    if own_gradients is not None:
      loss, grads = own_gradients(features, labels, self.loss_fn)
    else:
      loss = self.compute_loss(features, labels)
      grads = tf.gradients(loss, variables)
    self.optimizer.apply_gradients(zip(grads, variables))
    self.step.assign_add(1)
    return loss

  def _run_steps_fn(self, x, y, first_step, num_steps, batch_size: int):
    losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
    for i in tf.range(num_steps):
      features, labels = batch_at(x, y, first_step + i, batch_size)
      loss = self._step_fn(features, labels)
      losses = losses.write(tf.cast(i, tf.int32), loss)
      if not tf.math.is_finite(loss):
        break
    return losses.stack()

  def train_step(self, features, labels) -> tf.Tensor:
    """One Adam step on one batch; returns the loss before the update.

    Args:
      features: float32 `[batch, 128]`.
      labels: integers `[batch]` in [0, 10).

    Raises:
      TfMpError: a shape or label is out of range (checked when the values are
        concrete: numpy arrays or eager tensors).
    """
    if not tf.is_symbolic_tensor(features) and not tf.is_symbolic_tensor(labels):
      features, labels = self.check_data(features, labels, 'train_step')
      self._check_batch_size(len(features))
    return self._train_step(
        tf.convert_to_tensor(features, tf.float32),
        tf.convert_to_tensor(labels, tf.int32))

  def traced_step_graph(self) -> tf.Graph:
    """The graph of one training step (forward, `tf.gradients`, Adam), for reports."""
    return self._train_step.get_concrete_function(
        tf.TensorSpec([None, self.input_units], tf.float32),
        tf.TensorSpec([None], tf.int32)).graph

  def fit(self,
          x,
          y,
          *,
          steps: int,
          batch_size: int = 64,
          log_every: int = 100,
          on_log: Optional[Callable[[int, np.float32], None]] = None,
          checkpoint_every: Optional[int] = None,
          on_checkpoint: Optional[Callable[[int], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None) -> TrainResult:
    """Trains from `self.step` up to `steps`, many steps per `tf.function` call.

    Step s uses rows `tf_mp.batch_indices(s, batch_size, len(x))`. The loss of
    every step with `s % log_every == 0` (and of the last step) is passed to
    `on_log(s, loss)` as soon as that step has run.

    Args:
      x: float32 `[n, 128]` features.
      y: integer `[n]` labels in [0, 10).
      steps: train until `self.step == steps` (the total, not an increment).
      batch_size: examples per step.
      log_every: logging interval in steps.
      on_log: called with `(step, loss)` at each logging step.
      checkpoint_every: with `on_checkpoint`, call `on_checkpoint(n)` each time
        `self.step` reaches a multiple `n` of it, and at the end.
      on_checkpoint: e.g. `tf_mp.TrainingCheckpoints.save`.
      should_stop: asked after each `tf.function` call (a step boundary, at
        most `log_every` steps apart); True ends training there, after the
        checkpoint of that boundary if one was due (e.g. a signal handler's flag).

    With a strategy, `batch_size` is the global batch: each of the
    `strategy.num_replicas` replicas trains on its slice of step s's rows (the
    dataset is distributed with `distribute_datasets_from_function`), and the
    loss is the mean over the global batch.

    Returns:
      A `TrainResult`.

    Raises:
      TfMpError: bad data or arguments, before any step runs.
      TrainingDivergedError: a step's loss was NaN or Inf; names the step.
    """
    steps = _positive_int('steps', steps)
    batch_size = _positive_int('batch_size', batch_size)
    log_every = _positive_int('log_every', log_every)
    if checkpoint_every is not None:
      checkpoint_every = _positive_int('checkpoint_every', checkpoint_every)
    x, y = self.check_data(x, y, 'training data')
    self._check_batch_size(batch_size)
    x, y = tf.constant(x), tf.constant(y)
    first = current = int(self.step.numpy())
    if first >= steps:
      raise TfMpError(f'already trained {first} steps; steps={steps} asks for none')
    logged = []
    loss = np.float32('nan')
    if self.strategy:
      iterator = iter(self._distributed_dataset(x, y, first, steps, batch_size))
    start = time.perf_counter()
    while current < steps:
      # A chunk ends right after the next logging step, so lines appear on time.
      end = current + 1 if current % log_every == 0 else (
          (current // log_every + 1) * log_every + 1)
      end = min(end, steps)
      if checkpoint_every:
        end = min(end, (current // checkpoint_every + 1) * checkpoint_every)
      if self.strategy:
        try:
          losses = self._run_steps(iterator, tf.constant(end - current, tf.int64),
                                   batch_size).numpy()
        except COLLECTIVE_FAILURES as e:
          raise WorkerLostError(current, self.strategy.collective_timeout, e) from None
      else:
        losses = self._run_steps(x, y, tf.constant(current, tf.int64),
                                 tf.constant(end - current, tf.int64),
                                 batch_size).numpy()
      for offset, loss in enumerate(losses):
        step = current + offset
        if not np.isfinite(loss):
          raise TrainingDivergedError(step, float(loss))
        if step % log_every == 0 or step == steps - 1:
          logged.append((step, float(loss)))
          if on_log is not None and step % log_every == 0:
            on_log(step, loss)
      current = end
      if on_checkpoint is not None and checkpoint_every and (
          current % checkpoint_every == 0 or current == steps):
        on_checkpoint(current)
      if should_stop is not None and current < steps and should_stop():
        break
    return TrainResult(first, current - 1, float(loss), logged,
                       time.perf_counter() - start)

  # The distributed path (a `tf_mp.StrategyLayout` with a tf.distribute strategy).

  def _replica_step_fn(self, features, labels, global_batch):
    """One replica's step on its slice: its share of the global-batch loss.

    The replica's ops run on its device group; `Adam.apply_gradients` sums the
    replicas' gradients (all-reduce) before the identical update on every copy.
    """
    with self.strategy.replica_placement():
      loss = self.compute_loss(features, labels)
      with device_scope(getattr(self.model, 'output_device', None)):
        # mean over the slice * slice / global batch = sum over slice / global.
        loss = loss * (tf.cast(tf.shape(labels)[0], tf.float32) /
                       tf.cast(global_batch, tf.float32))
      variables = self.model.trainable_variables
      grads = tf.gradients(loss, variables)
      self.optimizer.apply_gradients(zip(grads, variables))
    return loss

  def _replica_slice_step_fn(self, features, labels):
    """`train_step` in a replica: takes replica r's rows of the global batch."""
    context = tf.distribute.get_replica_context()
    replica = context.replica_id_in_sync_group
    replicas = context.num_replicas_in_sync
    global_batch = tf.shape(labels)[0]
    per_replica = global_batch // replicas
    rows = tf.range(replica * per_replica, (replica + 1) * per_replica)
    return self._replica_step_fn(tf.gather(features, rows), tf.gather(labels, rows),
                                 global_batch)

  def _distributed_step_fn(self, features, labels):
    strategy = self.strategy.strategy
    per_replica = strategy.run(_no_autograph(self._replica_slice_step_fn),
                               args=(features, labels))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    self.step.assign_add(1)
    return loss

  def _distributed_run_steps_fn(self, iterator, num_steps, batch_size: int):
    strategy = self.strategy.strategy
    losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
    for i in tf.range(num_steps):
      features, labels = next(iterator)
      per_replica = strategy.run(_no_autograph(self._replica_step_fn),
                                 args=(features, labels, batch_size))
      loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
      self.step.assign_add(1)
      losses = losses.write(tf.cast(i, tf.int32), loss)
      if not tf.math.is_finite(loss):
        break
    return losses.stack()

  def _distributed_dataset(self, x, y, first_step: int, last_step: int,
                           batch_size: int):
    """Steps `first_step..last_step-1`, each global batch cut into replica slices.

    Step s's global batch is `batch_at(x, y, s, batch_size)`, as without a
    strategy; global replica g gets its rows `[g * b, (g + 1) * b)`, b =
    batch_size / replicas. Each worker's pipeline yields, per step, one element
    per local replica, which the strategy hands out to them in order.
    """
    replicas = self.strategy.num_replicas
    if batch_size % replicas:
      raise TfMpError(f'batch_size {batch_size} is not divisible by the '
                      f'{replicas} replicas in sync; expected a multiple of '
                      f'{replicas} (batch_size is the global batch)')
    per_replica = batch_size // replicas

    def dataset_fn(context: tf.distribute.InputContext):
      local = replicas // context.num_input_pipelines
      first_replica = context.input_pipeline_id * local

      def replica_slices(step):
        features, labels = batch_at(x, y, step, batch_size)
        start = first_replica * per_replica
        features = tf.reshape(features[start:start + local * per_replica],
                              [local, per_replica, -1])
        labels = tf.reshape(labels[start:start + local * per_replica],
                            [local, per_replica])
        return tf.data.Dataset.from_tensor_slices((features, labels))

      dataset = tf.data.Dataset.range(first_step, last_step)
      return dataset.flat_map(replica_slices).prefetch(2 * local)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return self.strategy.strategy.distribute_datasets_from_function(dataset_fn, options)


def _no_autograph(fn):
  """The replica step has no data-dependent Python control flow: autograph's
  conversion of it (and of every module it calls) only costs tracing time."""
  return tf.autograph.experimental.do_not_convert(fn)


def _check_created_in_scope(model, layout) -> None:
  """Raises TfMpError unless the model's variables belong to the strategy."""
  for var in model.trainable_variables:
    if not layout.strategy.extended.variable_created_in_scope(var):
      raise TfMpError(
          f'variable {var.name!r} was not created under the {layout.kind} '
          "strategy's scope; build the model with layout.build_model(...) or "
          'inside layout.scope()')
