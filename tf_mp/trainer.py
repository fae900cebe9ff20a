"""Training with TF1-exact Adam: one step function, one loop, any strategy.

Every step goes through `strategy.run`, with TensorFlow's default strategy
standing in for "no strategy" (as `official/core/base_trainer.py` does), so
the single-device, mirrored and multi-worker runs share one code path. Inside
the replica step the loss's gradients are taken with `tf.gradients`, which
colocates each gradient op with its forward op: each sub-model's backward pass
runs on the sub-model's device. (`tf.GradientTape` inside `tf.function` leaves
the backward ops unplaced; see docs/design.md.)
"""

import contextlib
import dataclasses
import time
from typing import Callable, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import tensorflow as tf

from tf_mp.adam import Adam
from tf_mp.checks import (divisible_batch, finite_number, instance_of, optional_callable,
                          positive_int, short_repr, text)
from tf_mp.data import batch_at, check_arrays, check_row_range
from tf_mp.devices import check_devices_exist, device_scope
from tf_mp.distribute.strategies import COLLECTIVE_FAILURES, StrategyLayout
from tf_mp.errors import TfMpError, TrainingDivergedError, WorkerLostError, error_line
from tf_mp.memory import check_batch_fits


def sparse_softmax_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Mean sparse softmax cross-entropy: logits `[batch, ..., classes]`, labels `[batch, ...]`.

  Raises:
    TfMpError: the logits are not floats, the labels not integers, their
      shapes do not match, or (for concrete labels) a label is outside
      `[0, classes)`. Shapes and dtypes are checked while tracing too;
      inside `tf.function` the label values are `Trainer`'s data check's.
  """
  check_loss_inputs(logits, labels)
  if tf.as_dtype(labels.dtype) not in (tf.int32, tf.int64):
    labels = tf.cast(labels, tf.int64)  # the kernel takes these two only
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                     logits=logits))


def check_loss_inputs(logits, labels) -> None:
  """The checks of `sparse_softmax_loss` (see there), as one TfMpError line."""
  for name, value, kinds in (('logits', logits, 'f'), ('labels', labels, 'iu')):
    dtype = getattr(value, 'dtype', None)
    try:
      kind = np.dtype(tf.as_dtype(dtype).as_numpy_dtype).kind if dtype is not None else None
    except TypeError:
      kind = None
    if kind is None or kind not in kinds:
      raise TfMpError(f'sparse_softmax_loss: {name} {short_repr(value)} must be '
                      f'{"a float" if kinds == "f" else "an integer"} tensor')
  logits_shape, labels_shape = tf.TensorShape(logits.shape), tf.TensorShape(labels.shape)
  if logits_shape.rank == 0:
    raise TfMpError('sparse_softmax_loss: logits have shape []; expected [batch, ..., classes]')
  if (logits_shape.rank is not None and labels_shape.rank is not None and
      not logits_shape[:-1].is_compatible_with(labels_shape)):
    raise TfMpError(f'sparse_softmax_loss: labels have shape {labels_shape.as_list()}; '
                    f'expected the logits\' shape without its last axis '
                    f'{logits_shape[:-1].as_list()}')
  classes = logits_shape[-1] if logits_shape.rank else None
  if classes is not None and not tf.is_symbolic_tensor(labels):
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= classes):
      bad = values.min() if values.min() < 0 else values.max()
      raise TfMpError(f'sparse_softmax_loss: label {bad} is outside [0, {classes})')


@runtime_checkable
class TrainableModel(Protocol):
  """What `Trainer` trains: a callable from features to logits with variables.

  Required:
    `__call__(features) -> logits`: float32 features `[batch, features]` (or
      the model's `input_spec`) to logits `[batch, classes]`; the model places
      its own computation (`tf.device` scopes inside `__call__`).
    `trainable_variables`: the variables Adam updates (any `tf.Module` has it).

  Optional, each used only when present:
    `input_spec`: a `tf.TensorSpec` of one batch of features (default: float32
      `[None, width]`, the width taken from the training data).
    `label_spec`: a `tf.TensorSpec` of one batch of labels (default int32
      `[None]`).
    `num_classes`: the logits' width (default: read from the traced forward
      pass). Labels must lie in `[0, num_classes)`.
    `output_device`: where the loss is computed (default: TensorFlow decides).
    `check_data(features, labels, source) -> (features, labels)`: the model's
      own data check (default: `tf_mp.check_arrays`).
    `check_batch_size(batch_size)`: raises `TfMpError` for a batch size the
      model cannot take (a pipeline needs a multiple of its micro-batches).
    `loss_and_gradients(features, labels, loss_fn) -> (loss, grads)`: a
      gradient path of its own (a pipeline accumulates over micro-batches),
      grads aligned with `trainable_variables`.
  """

  @property
  def trainable_variables(self) -> Sequence[tf.Variable]:
    ...

  def __call__(self, features: tf.Tensor) -> tf.Tensor:
    ...


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


class Trainer:
  """Trains any `TrainableModel` with TF1's Adam, under any strategy layout.

  The loss (`loss_fn`, by default the mean sparse softmax cross-entropy) is
  computed on the model's `output_device`. Gradients come from `tf.gradients`,
  so each backward op sits on its forward op's device. With a replicated
  strategy each replica takes its slice of the global batch, its share of the
  loss, and its gradients, which are summed across replicas (one all-reduce)
  before the same Adam update on every copy.

  Attributes:
    model: the model being trained.
    optimizer: its `tf_mp.Adam` (TF1's `AdamOptimizer`, epsilon 1e-8).
    step: int64 variable, the number of steps taken so far.
    layout: the `tf_mp.distribute.StrategyLayout`, or None.
  """

  def __init__(self,
               model: TrainableModel,
               learning_rate: float = 0.001,
               *,
               beta1: float = 0.9,
               beta2: float = 0.999,
               epsilon: float = 1e-8,
               loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] = sparse_softmax_loss,
               strategy=None,
               input_spec: Optional[tf.TensorSpec] = None,
               num_classes: Optional[int] = None):
    """Creates the optimizer state (under the strategy's scope) and the step.

    Args:
      model: a `TrainableModel`, e.g. `tf_mp.build_model(...)` or your own
        `tf.Module` with `tf.device` scopes inside.
      learning_rate, beta1, beta2, epsilon: Adam's settings (TF1's defaults).
      loss_fn: `(logits, labels) -> scalar`, a mean over the examples.
      strategy: a `tf_mp.distribute.StrategyLayout` (from `create_strategy`),
        or None for TensorFlow's default strategy. A replicated layout needs
        the model built inside `layout.scope()`.
      input_spec: overrides the model's `input_spec` (features of one batch).
      num_classes: overrides the model's `num_classes`.

    Raises:
      TfMpError: the model has no trainable variables, has floating-point
        variables that are not float32, was built outside the strategy's
        scope, declares an `input_spec`, `label_spec` or `output_device`
        that is not one, an argument is out of range, or this is called
        inside a `tf.function`.
    """
    if not tf.executing_eagerly():
      raise TfMpError('Trainer(...) was called inside a tf.function; it creates its '
                      'optimizer state: create it eagerly, before the function')
    if not callable(model) or not hasattr(model, 'trainable_variables'):
      raise TfMpError(f'model {type(model).__name__} is not trainable: expected a '
                      'callable with trainable_variables (e.g. a tf.Module)')
    foreign = [v for v in model.trainable_variables if not isinstance(v, tf.Variable)]
    if foreign:
      # A Keras 3 model: its weights are keras.Variables, which this optimizer cannot place.
      raise TfMpError(f'model {type(model).__name__} has weights that are not tf.Variables '
                      f'({type(foreign[0]).__module__}.{type(foreign[0]).__name__}); expected '
                      'a tf.Module (train a Keras model with tf_mp.keras and model.fit)')
    finite_number('learning_rate', learning_rate, positive=True)
    optional_callable('loss_fn', loss_fn)
    if strategy is not None:
      instance_of('strategy', strategy, StrategyLayout,
                  'a tf_mp.distribute.StrategyLayout (from create_strategy) or None')
    for name, spec in (('input_spec', input_spec),
                       (f'{type(model).__name__}.input_spec', getattr(model, 'input_spec', None)),
                       (f'{type(model).__name__}.label_spec', getattr(model, 'label_spec', None))):
      if spec is not None:
        instance_of(name, spec, tf.TensorSpec, 'a tf.TensorSpec or None')
    output_device = getattr(model, 'output_device', None)
    if output_device is not None:
      check_devices_exist([text(f'{type(model).__name__}.output_device', output_device,
                                'a device name or None')])
    self.model = model
    self.loss_fn = loss_fn
    self.layout = strategy if strategy is not None and strategy.distributed else None
    self._strategy = (self.layout.strategy if self.layout else
                      tf.distribute.get_strategy())
    self._input_spec = input_spec or getattr(model, 'input_spec', None)
    self._label_spec = getattr(model, 'label_spec', None) or tf.TensorSpec(
        [None], tf.int32)
    self._num_classes = (positive_int('num_classes', num_classes)
                         if num_classes is not None else getattr(model, 'num_classes', None))
    self._output_device = getattr(model, 'output_device', None)
    self._own_gradients = getattr(model, 'loss_and_gradients', None)
    with self._strategy.scope():
      if self.layout:
        _check_created_in_scope(model, self.layout)
      self.optimizer = Adam(learning_rate, beta1, beta2, epsilon)
      self.optimizer.build(model.trainable_variables)
      with tf.init_scope():
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self._train_step = tf.function(self._step_fn, autograph=False)
    self._run_steps = tf.function(self._run_steps_fn, autograph=False)
    self._loop = None  # The traced loop (a ConcreteFunction), once traced.
    self._loop_step_graph = None  # The step inside it: what reports read.

  # What the data must look like.

  @property
  def num_replicas(self) -> int:
    """Replicas in sync (1 without a replicated strategy)."""
    return self._strategy.num_replicas_in_sync

  def input_spec(self, features=None) -> tf.TensorSpec:
    """The spec of one batch of features: the model's, or float32 `[None, width]` of `features`."""
    if self._input_spec is not None:
      return self._input_spec
    if features is None:
      raise TfMpError(f'the features of {type(self.model).__name__} are not known '
                      'yet: give Trainer(..., input_spec=tf.TensorSpec([None, '
                      'width], tf.float32)) or train on data first')
    shape = np.shape(features)
    if len(shape) != 2 or shape[1] < 1:
      raise TfMpError(f'features have shape {list(shape)}; expected [n, width]')
    self._input_spec = tf.TensorSpec([None, shape[1]], tf.float32)
    return self._input_spec

  @property
  def num_classes(self) -> int:
    """The width of the model's logits (labels lie in `[0, num_classes)`)."""
    if self._num_classes is None:
      spec = self.input_spec()
      with self._user_code(spec):
        outputs = tf.function(self.model).get_concrete_function(spec).structured_outputs
      width = tf.TensorShape(getattr(outputs, 'shape', None))
      if width.rank is None or width[-1] is None:
        raise TfMpError(f'the logits of {type(self.model).__name__} have shape '
                        f'{width}; expected a known last axis, or give '
                        'Trainer(..., num_classes=...)')
      self._num_classes = int(width[-1])
    return self._num_classes

  def check_data(self, features, labels, source: str):
    """Checks concrete features and labels; returns them as numpy arrays.

    The model's own `check_data` when it has one, else `tf_mp.check_arrays`:
    finite float features `[n, width]` and integer labels `[n]` in
    `[0, num_classes)`.

    Raises:
      TfMpError: naming `source`, the offending shape or value.
    """
    own = getattr(self.model, 'check_data', None)
    if own is not None:
      checked = own(features, labels, source)
      if not isinstance(checked, (tuple, list)) or len(checked) != 2:
        raise TfMpError(f'{type(self.model).__name__}.check_data returned '
                        f'{short_repr(checked)}; expected (features, labels)')
      return checked
    spec = self.input_spec(features)
    return check_arrays(features, labels, source, spec.shape[-1], self.num_classes)

  def _check_batch_size(self, batch_size: int) -> None:
    divisible_batch(batch_size, self.num_replicas)
    check = getattr(self.model, 'check_batch_size', None)
    if check is not None:
      check(batch_size // self.num_replicas)

  # The step: one function for every strategy.

  def compute_loss(self, features: tf.Tensor, labels: tf.Tensor,
                   loss_fn: Optional[Callable] = None) -> tf.Tensor:
    """The scalar loss of one batch on the model's output device (no update)."""
    logits = self.model(features)
    classes = tf.TensorShape(getattr(logits, 'shape', None))
    if (self._num_classes is not None and classes.rank and classes[-1] is not None and
        classes[-1] != self._num_classes):
      raise TfMpError(f'{type(self.model).__name__} gives logits of width {classes[-1]} '
                      f'but declares num_classes {self._num_classes}; expected them equal')
    with device_scope(self._output_device), tf.name_scope('loss'):
      loss = (loss_fn or self.loss_fn)(logits, labels)
    if not tf.is_tensor(loss) or loss.shape.rank != 0 or not loss.dtype.is_floating:
      raise TfMpError(f'loss_fn returned {short_repr(loss)}; expected a float scalar '
                      'tensor (the mean loss of the batch)')
    return loss

  def _replica_step_fn(self, features, labels):
    """One replica's step on its slice of the global batch; returns its loss share.

    With R replicas, replica r takes rows `[r*b, (r+1)*b)` (b = batch / R) and
    the loss `mean over its slice * b / batch`, so the sum over replicas is the
    global-batch mean and the all-reduced gradient that of the global batch.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    loss_fn = self.loss_fn
    if replicas > 1:
      global_batch = tf.shape(labels)[0]
      per_replica = global_batch // replicas
      first = context.replica_id_in_sync_group * per_replica
      rows = tf.range(first, first + per_replica)
      features, labels = tf.gather(features, rows), tf.gather(labels, rows)
      share = 1.0 / replicas
      loss_fn = lambda logits, y: self.loss_fn(logits, y) * share  # pylint: disable=unnecessary-lambda-assignment
    variables = self.model.trainable_variables
    with self.layout.replica_placement() if self.layout else contextlib.nullcontext():
      if self._own_gradients is not None:
        loss, grads = self._own_gradients(features, labels, loss_fn)
      else:
        loss = self.compute_loss(features, labels, loss_fn)
        grads = tf.gradients(loss, variables)
      if all(g is None for g in grads):
        raise TfMpError(f'the loss of {type(self.model).__name__} does not depend on any '
                        'of its trainable variables; expected a loss computed from the '
                        "model's logits")
      if replicas > 1:
        grads = _all_reduce_sum(context, grads, variables)
      self.optimizer.apply_gradients(zip(grads, variables))
    return loss

  def _step_fn(self, features, labels):
    per_replica = self._strategy.run(_no_autograph(self._replica_step_fn),
                                     args=(features, labels))
    if self.num_replicas > 1:
      loss = self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    else:
      loss = self._strategy.experimental_local_results(per_replica)[0]
    self.step.assign_add(1)
    return loss

  def _run_steps_fn(self, x, y, first_step, num_steps, batch_size):
    """Steps `first_step ... first_step + num_steps - 1`; their losses, float32 `[k]`.

    Stops after a non-finite loss (k < num_steps then). A plain
    `tf.while_loop`, not autograph: the loop is the only control flow, and
    converting the code it calls would only cost start-up time.
    """

    def body(i, losses, _):
      # Traced once, in the loop's body graph: the graph reports read.
      self._loop_step_graph = tf.compat.v1.get_default_graph()
      features, labels = batch_at(x, y, first_step + i, batch_size)
      loss = self._step_fn(features, labels)
      return i + 1, losses.write(tf.cast(i, tf.int32), loss), tf.math.is_finite(loss)

    losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
    _, losses, _ = tf.while_loop(
        lambda i, losses, finite: tf.logical_and(i < num_steps, finite), body,
        (tf.constant(0, tf.int64), losses, tf.constant(True)))
    return losses.stack()

  def _loop_function(self):
    """The training loop, traced once for any data size and batch size.

    Features `[None, ...]` of the input spec, labels of the label spec, and
    int64 scalars `first_step`, `num_steps`, `batch_size`: every `fit` and every
    report use this one trace (and its one graph optimisation).
    """
    if self._loop is None:
      spec = self.input_spec()
      scalar = tf.TensorSpec([], tf.int64)
      with self._user_code(spec):
        self._loop = self._run_steps.get_concrete_function(
            tf.TensorSpec([None] + spec.shape[1:], spec.dtype),
            tf.TensorSpec([None] + self._label_spec.shape[1:], self._label_spec.dtype),
            scalar, scalar, scalar)
    return self._loop

  @contextlib.contextmanager
  def _user_code(self, spec: tf.TensorSpec):
    """Turns an error raised while tracing the model or the loss into one TfMpError line."""
    try:
      yield
    except TfMpError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise TfMpError(f'training {type(self.model).__name__} on features {spec.dtype.name} '
                      f'{spec.shape} failed while tracing its step ({error_line(e)})') from e

  def train_step(self, features, labels) -> tf.Tensor:
    """One Adam step on one (global) batch; returns the loss before the update.

    Args:
      features: one batch, e.g. float32 `[batch, 128]` for the document's model.
      labels: its labels, e.g. integers `[batch]` in [0, 10).

    Raises:
      TfMpError: a shape or label is out of range (checked when the values are
        concrete: numpy arrays or eager tensors), or the batch does not split
        over the replicas.
    """
    if not tf.is_symbolic_tensor(features) and not tf.is_symbolic_tensor(labels):
      features, labels = self.check_data(features, labels, 'train_step')
      self._check_batch_size(len(features))
    try:
      return self._train_step(
          tf.convert_to_tensor(features, self.input_spec(features).dtype),
          tf.convert_to_tensor(labels, self._label_spec.dtype))
    except COLLECTIVE_FAILURES as e:
      raise WorkerLostError(int(self.step.numpy()), self._collective_timeout, e) from None

  def traced_step_graph(self) -> tf.Graph:
    """The graph of one training step (forward, `tf.gradients`, Adam), for reports.

    It is the body of the training loop that `fit` runs: reading it costs no
    second trace. Ops carry the devices they were given (`op.device`).
    """
    self._loop_function()
    return self._loop_step_graph

  @property
  def _collective_timeout(self) -> Optional[float]:
    return self.layout.collective_timeout if self.layout else None

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
      x: features, e.g. float32 `[n, 128]`.
      y: labels, e.g. integers `[n]` in [0, 10).
      steps: train until `self.step == steps` (the total, not an increment).
      batch_size: examples per step: the global batch, which each of the
        `num_replicas` replicas slices (replica r takes rows `[r*b, (r+1)*b)`).
      log_every: logging interval in steps.
      on_log: called with `(step, loss)` at each logging step.
      checkpoint_every: with `on_checkpoint`, call `on_checkpoint(n)` each time
        `self.step` reaches a multiple `n` of it, and at the end.
      on_checkpoint: e.g. `tf_mp.TrainingCheckpoints.save`.
      should_stop: asked after each `tf.function` call (a step boundary, at
        most `log_every` steps apart); True ends training there, after the
        checkpoint of that boundary if one was due (e.g. a signal handler's flag).

    Returns:
      A `TrainResult`.

    Raises:
      TfMpError: bad data or arguments, before any step runs; a call inside a
        `tf.function`; the model or `loss_fn` failing while the step is traced
        (the error's own line in the message), logits whose width is not the
        declared `num_classes`, a loss that is not a float scalar or that no
        trainable variable reaches.
      TrainingDivergedError: a step's loss was NaN or Inf; names the step.
      WorkerLostError: a collective with another worker failed.
    """
    if not tf.executing_eagerly():
      raise TfMpError('Trainer.fit was called inside a tf.function; it runs its own '
                      'traced loop: call it eagerly (use train_step inside tf.function)')
    steps = positive_int('steps', steps)
    batch_size = positive_int('batch_size', batch_size)
    log_every = positive_int('log_every', log_every)
    for name, function in (('on_log', on_log), ('on_checkpoint', on_checkpoint),
                           ('should_stop', should_stop)):
      optional_callable(name, function)
    if checkpoint_every is not None:
      checkpoint_every = positive_int('checkpoint_every', checkpoint_every)
    check_row_range(steps, batch_size)
    x, y = self.check_data(x, y, 'training data')
    self._check_batch_size(batch_size)
    check_batch_fits(self.model, x, batch_size)
    loop = self._loop_function()
    x = tf.constant(x, self.input_spec().dtype)
    y = tf.constant(y, self._label_spec.dtype)
    first = current = int(self.step.numpy())
    if first >= steps:
      raise TfMpError(f'already trained {first} steps; steps={steps} asks for none')
    logged = []
    loss = np.float32('nan')
    start = time.perf_counter()
    while current < steps:
      # A chunk ends right after the next logging step, so lines appear on time.
      end = current + 1 if current % log_every == 0 else (
          (current // log_every + 1) * log_every + 1)
      end = min(end, steps)
      if checkpoint_every:
        end = min(end, (current // checkpoint_every + 1) * checkpoint_every)
      try:
        losses = loop(x, y, tf.constant(current, tf.int64),
                      tf.constant(end - current, tf.int64),
                      tf.constant(batch_size, tf.int64)).numpy()
      except COLLECTIVE_FAILURES as e:
        raise WorkerLostError(current, self._collective_timeout, e) from None
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


def _all_reduce_sum(context, grads, variables) -> list:
  """Sums each gradient over the replicas, in one batched all-reduce.

  Each gradient sits on its sub-model's device; moved beside its variable (the
  replica's lead device, where mirrored variables live) they all-reduce as one
  packed collective. Sparse gradients (an embedding's `IndexedSlices`) are made
  dense first, as Adam's dense update needs them anyway: replicas then pack
  the same shapes.
  """
  present = [i for i, g in enumerate(grads) if g is not None]
  moved = []
  for i in present:
    with tf.device(variables[i].device):
      moved.append(tf.identity(tf.convert_to_tensor(grads[i])))
  # `batch_reduce_to` in the cross-replica context: the strategy's own
  # cross-device reduction (one packed collective across workers). A
  # replica-context `all_reduce` would take collective instance keys that a
  # second strategy in the same process reuses for other shapes.
  pairs = [(g, variables[i]) for g, i in zip(moved, present)]
  reduced = context.merge_call(
      lambda strategy, pairs: strategy.extended.batch_reduce_to(
          tf.distribute.ReduceOp.SUM, pairs), args=(pairs,))
  out = list(grads)
  for i, g in zip(present, reduced):
    out[i] = g
  return out


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
          "strategy's scope; build the model inside layout.scope()")
