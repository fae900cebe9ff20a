"""`tf_mp.keras.Model`: a Keras model whose training step places the backward pass too."""

import contextlib
import os
import re
import tempfile
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from keras.src.losses import loss as keras_loss_module
from keras.src.models import functional as keras_functional
from keras.src.models.model import functional_init_arguments

from tf_mp.checks import (has_attributes, instance_of, numeric_array, positive_int,
                          short_repr)
from tf_mp.devices import device_scope, resolve_devices
from tf_mp.files import check_path, check_writable_dir
from tf_mp.errors import TfMpError
from tf_mp.keras.layers import (NameSeededGlorotUniform, OnDevice, SubModel,
                                on_device)
from tf_mp.model import ModelConfig

_PACKAGE = 'tf_mp'
# `Model.compile`'s steps per traced call when none is given (no strategy).
DEFAULT_STEPS_PER_EXECUTION = 100


class _PlacedTraining:
  """The training step and checks shared by the subclassing and functional forms."""

  # A `tf_mp.distribute.StrategyLayout` set by `distribute_over`; None: no device groups.
  _tf_mp_layout = None
  # The FuncGraph of the last traced training step (for `placement_report`).
  _tf_mp_train_graph = None

  @property
  def output_device(self) -> Optional[str]:
    """Where the loss runs: `loss_device` if set, else the device of the layer
    that makes the (first) output when that layer is an `on_device` layer."""
    explicit = getattr(self, 'loss_device', None)
    if explicit:
      return explicit
    outputs = getattr(self, '_outputs', None) if isinstance(
        self, keras_functional.Functional) else None
    if outputs:
      history = getattr(keras.tree.flatten(outputs)[0], '_keras_history', None)
      layer = history.operation if history else None
      if isinstance(layer, OnDevice):
        return layer.device
    return None

  @property
  def layout(self):
    """The `tf_mp.distribute.StrategyLayout` given to `distribute_over`, or None."""
    return self._tf_mp_layout

  def distribute_over(self, layout) -> 'Model':
    """Runs each replica of `layout.strategy` on its own device group.

    The model must have been built (its weights created) under
    `layout.scope()`, on `layout.groups[0]`; replica r then computes on
    `layout.groups[r]` in `fit`, `evaluate` and `predict`.

    Args:
      layout: a `tf_mp.distribute.StrategyLayout` from `tf_mp.distribute.create_strategy`.

    Returns:
      The model itself.

    Raises:
      TfMpError: `layout` is not a layout, or a weight was not created under
        the layout's strategy scope.
    """
    if layout is not None:
      has_attributes('distribute_over: layout', layout, ('distributed', 'strategy', 'kind'),
                     'a tf_mp.distribute.StrategyLayout (from create_strategy) or None')
    if layout is not None and layout.distributed:
      self._check_created_in_scope(layout.strategy, layout.kind)
    self._tf_mp_layout = layout
    return self

  def _check_created_in_scope(self, strategy, kind: str = 'current') -> None:
    for weight in self.weights:
      variable = getattr(weight, 'value', weight)
      if not strategy.extended.variable_created_in_scope(variable):
        raise TfMpError(
            f'weight {weight.path!r} was not created under the {kind} '
            "strategy's scope; build the model inside strategy.scope() (or "
            'with tf_mp.keras.build_model(layout))')

  def _check_strategy(self) -> None:
    """One clear line instead of Keras's deep error for a model built outside the scope."""
    if tf.distribute.has_strategy() and self.built:
      strategy = tf.distribute.get_strategy()
      if self._distribute_strategy is not strategy:
        self._check_created_in_scope(strategy)
    optimizer_strategy = getattr(self.optimizer, '_distribution_strategy', None)
    if (self._distribute_strategy is not None and optimizer_strategy is not None and
        optimizer_strategy is not self._distribute_strategy):
      raise TfMpError('the model was built under a tf.distribute strategy but '
                      'compiled outside its scope; call model.compile(...) '
                      'inside strategy.scope() (layout.scope())')

  def _replica_placement(self):
    layout = self._tf_mp_layout
    if layout is None or not layout.distributed:
      return contextlib.nullcontext()
    return layout.replica_placement()

  def _check_input_shape(self, x, where: str) -> None:
    """One line instead of Keras's error when `x` does not fit a functional model's input."""
    if not self._single_input() or x is None:
      return
    expected = list(keras.tree.flatten(self._inputs)[0].shape)
    if isinstance(x, tf.data.Dataset):
      spec = x.element_spec
      spec = spec[0] if isinstance(spec, (tuple, list)) else spec
      shape = getattr(spec, 'shape', None)
      shape = list(shape) if shape is not None and shape.rank is not None else None
    else:
      shape = list(np.shape(x)) if isinstance(x, (np.ndarray, tf.Tensor)) else None
    if shape is None:
      return
    if len(shape) != len(expected) or any(
        e is not None and s is not None and e != s
        for e, s in zip(expected[1:], shape[1:])):
      wanted = ', '.join(['batch'] + [str(e) for e in expected[1:]])
      raise TfMpError(f'{where}: inputs have shape {shape}; the model expects '
                      f'[{wanted}]')

  def __call__(self, *args, **kwargs):
    """Keras's call, with one line for inputs that cannot be the model's input.

    A missing input, a string, or an array whose shape does not fit a
    functional model's input is a TfMpError (Keras's ValueError before).
    Symbolic inputs (the model used as a layer) go to Keras unchecked.
    """
    if args and not keras.backend.is_keras_tensor(args[0]):
      inputs = args[0]
      if inputs is None or isinstance(inputs, (str, bytes)):
        raise TfMpError(f'call: inputs must be a tensor or an array, got '
                        f'{short_repr(inputs)}')
      if isinstance(inputs, list) and self._single_input():
        inputs = numeric_array("call: 'inputs'", inputs)
        args = (inputs,) + args[1:]
      self._check_input_shape(inputs, 'call')
    return super().__call__(*args, **kwargs)

  def _single_input(self) -> bool:
    inputs = getattr(self, '_inputs', None) if isinstance(
        self, keras_functional.Functional) else None
    return bool(inputs) and len(keras.tree.flatten(inputs)) == 1

  def compile(self, *args, steps_per_execution=None, jit_compile=False,  # pylint: disable=arguments-differ
              **kwargs):
    """Keras's `compile`, with defaults that suit placed training.

    Args:
      *args, **kwargs: as `keras.Model.compile`.
      steps_per_execution: steps per call of the traced train (test, predict)
        function. None (the default): `DEFAULT_STEPS_PER_EXECUTION` (100),
        or 1 when the model was built, or is compiled, under a
        `tf.distribute` strategy (Keras 3.15 cannot run several steps per
        call under `MirroredStrategy`). One step per call costs a Python
        round trip and a multi-device function call per step, which is most
        of a step of the document's model on CPUs. What changes for
        callbacks: Keras calls `on_train_batch_begin/end` (and the progress
        bar) once per execution, with the logs of its last step and `batch`
        the index of that last step; epoch-level callbacks
        (`ModelCheckpoint`, `EarlyStopping`, `CSVLogger`, ...) see no
        difference. `StepLogger` still prints every step's loss. Pass 1 for
        Keras's per-batch calls.
      jit_compile: False by default (Keras's `'auto'` turns XLA on where a
        GPU exists, and an XLA cluster ignores the per-layer devices).
    """
    if len(args) > 6:  # steps_per_execution given by position: Keras's call as is
      return super().compile(*args, **kwargs)
    if steps_per_execution is None:
      distributed = self._distribute_strategy is not None or tf.distribute.has_strategy()
      steps_per_execution = 1 if distributed else DEFAULT_STEPS_PER_EXECUTION
    return super().compile(*args, steps_per_execution=steps_per_execution,
                           jit_compile=jit_compile, **kwargs)

  def compile_from_config(self, config):
    """Keras's, which skips a class that overrides `compile`: `load_model` compiles."""
    self.compile(**keras.saving.deserialize_keras_object(config))
    if self.built:  # eagerly: each slot beside its weight
      self.optimizer.build(self.trainable_variables)

  def _check_labels(self, y, where: str) -> None:
    """One line instead of Keras's kernel error for a class id outside the logits.

    Only where both are known before running: concrete integer labels, a
    sparse categorical cross-entropy loss, a functional model's logits width.
    (Integer targets of another loss may be anything.)
    """
    loss = getattr(self, 'loss', None)
    sparse = (isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or
              loss in ('sparse_categorical_crossentropy',
                       keras.losses.sparse_categorical_crossentropy))
    outputs = getattr(self, '_outputs', None) if isinstance(
        self, keras_functional.Functional) else None
    if (not sparse or y is None or not outputs or len(keras.tree.flatten(outputs)) != 1 or
        not isinstance(y, (np.ndarray, list, tuple, tf.Tensor)) or tf.is_symbolic_tensor(y)):
      return
    classes = keras.tree.flatten(outputs)[0].shape[-1]
    labels = np.asarray(y)
    if labels.dtype.kind == 'f' and labels.size:
      fractional = labels[labels != np.round(labels)]
      if fractional.size:  # Keras would truncate it to a class id without a word
        raise TfMpError(f'{where}: label {fractional.flat[0]} is not a class id; a sparse '
                        'categorical cross-entropy loss takes integer labels')
      labels = labels.astype(np.int64)
    if classes is None or not labels.size or labels.dtype.kind not in 'iu':
      return
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
      raise TfMpError(f'{where}: label {bad.flat[0]} is outside [0, {classes}); the model '
                      f'has {classes} logits and a sparse categorical cross-entropy loss')

  def save(self, filepath, overwrite=True, **kwargs):  # pylint: disable=signature-differs
    """Keras's `save`, written beside the file and renamed into place.

    A save interrupted half way (Ctrl-C, a full disk) leaves the previous
    file as it was; a path Keras cannot write is one TfMpError line first.

    Raises:
      TfMpError: `filepath` is not a path, does not end in `.keras` or `.h5`,
        is a directory, exists while `overwrite` is False (Keras would ask on
        stdin), or its folder cannot be created or written; or the write
        fails (a full disk).
    """
    filepath = check_path(filepath, 'save: file')
    if not filepath.endswith(('.keras', '.h5')):
      raise TfMpError(f'save: file {filepath!r} has no .keras (or .h5) extension; '
                      "expected e.g. 'model.keras'")
    if os.path.isdir(filepath):
      raise TfMpError(f'save: file {filepath!r} is a directory; expected a file name')
    if not overwrite and os.path.lexists(filepath):
      raise TfMpError(f'save: file {filepath!r} exists and overwrite=False; nothing '
                      'was written')
    folder = os.path.dirname(os.path.abspath(filepath))
    check_writable_dir(folder, 'save: folder')
    name, extension = os.path.splitext(os.path.basename(filepath))
    handle, staging = tempfile.mkstemp(prefix=f'.{name}.', suffix=f'.tmp{extension}',
                                       dir=folder)
    os.close(handle)
    try:
      result = super().save(staging, overwrite=True, **kwargs)
      os.replace(staging, filepath)
      staging = None
    except OSError as e:  # A full disk, an I/O error: the previous file stands.
      raise TfMpError(f'save: could not write {filepath!r} ({e.strerror or e}); '
                      'any previous file there is unchanged') from None
    finally:
      if staging is not None and os.path.exists(staging):
        os.remove(staging)
    return result

  def fit(self, x=None, y=None, *args, **kwargs):  # pylint: disable=signature-differs,keyword-arg-before-vararg
    self._check_strategy()
    self._check_input_shape(x, 'fit')
    self._check_labels(y, 'fit')
    _check_batch_size('fit', args[0] if args else kwargs.get('batch_size'))
    with _label_errors('fit'):
      return super().fit(x, y, *args, **kwargs)

  def evaluate(self, x=None, y=None, *args, **kwargs):  # pylint: disable=signature-differs,keyword-arg-before-vararg
    self._check_input_shape(x, 'evaluate')
    self._check_labels(y, 'evaluate')
    _check_batch_size('evaluate', args[0] if args else kwargs.get('batch_size'))
    with _label_errors('evaluate'):
      return super().evaluate(x, y, *args, **kwargs)

  def predict(self, x, *args, **kwargs):  # pylint: disable=signature-differs
    self._check_input_shape(x, 'predict')
    _check_batch_size('predict', args[0] if args else kwargs.get('batch_size'))
    return super().predict(x, *args, **kwargs)

  def train_step(self, data):
    """Keras's TensorFlow `train_step`, with `tf.gradients` instead of a `GradientTape`.

    `tf.gradients` colocates each gradient op with its forward op, so the
    backward pass of an `on_device` layer runs on that layer's device. Loss,
    metrics, loss scaling (`optimizer.scale_loss`) and regularization losses
    (`compute_loss` adds `self.losses`) are as in Keras.

    Returns:
      The metric results (`loss` is Keras's running mean over the epoch) and
      `step_loss`: this step's own loss, the mean over its global batch
      (`StepLogger` prints it). With `steps_per_execution = k > 1` also
      `step_losses` `[k]`: the loss of step s at index `s % k`, so that the
      logger still sees every step although Keras reports once per execution.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if not tf.executing_eagerly():
      # Outside Keras's attribute tracking: a graph is not model state.
      self.__dict__['_tf_mp_train_graph'] = tf.compat.v1.get_default_graph()
    step_losses = self.__dict__.get('_tf_mp_step_losses')
    if step_losses is not None:
      # Read before apply_gradients (autograph keeps program order): this step's index.
      slot = tf.cast(self.optimizer.iterations % step_losses.shape[0], tf.int32)
    with self._replica_placement():
      if self._call_has_training_arg:
        y_pred = self(x, training=True)
      else:
        y_pred = self(x)
      with device_scope(self.output_device):
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                  sample_weight=sample_weight, training=True)
        unscaled = keras_loss_module.unscale_loss_for_distribution(loss)
        self._loss_tracker.update_state(
            unscaled,
            sample_weight=tf.shape(
                next(i for i in keras.tree.flatten(x) if i is not None))[0])
        if self.optimizer is not None:
          loss = self.optimizer.scale_loss(loss)
      weights = self.trainable_weights
      if weights:
        self._build_optimizer_beside_weights(weights)
        # Gradients with respect to the TF variables under the Keras weights.
        grads = tf.gradients(loss, [w.value for w in weights])
        if all(g is None for g in grads):
          raise TfMpError('the loss does not depend on any trainable weight of the '
                          'model (do its outputs come from its weights by float '
                          'operations?); nothing to train')
        self.optimizer.apply_gradients(zip(grads, weights))
      else:
        raise TfMpError('the model has no trainable weights; nothing to train')
    logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    # Keras reduces per-replica logs with "mean" under fit: the mean of the
    # replicas' slice means is the global-batch mean (equal slices).
    logs = {**logs, 'step_loss': unscaled}
    if step_losses is not None:
      # Several steps per execution: Keras reports only the last step's logs,
      # so every step's loss is kept (aggregation MEAN: the global mean).
      step_losses.assign(tf.tensor_scatter_nd_update(
          step_losses.read_value(), [[slot]], [tf.cast(unscaled, tf.float32)]))
      logs['step_losses'] = step_losses.read_value()
    return logs

  def _build_optimizer_beside_weights(self, weights) -> None:
    """Creates the optimizer's slots now, eagerly, each on its weight's device.

    Keras builds an unbuilt optimizer inside the traced step, where its
    `colocate_vars_with` has no effect on the (eagerly created) slots: they
    all land on the default device, and every update of a branch's weight
    would read its slots across devices.
    """
    if self.optimizer is not None and not self.optimizer.built:
      with tf.init_scope():
        self.optimizer.build(weights)

  def make_train_function(self, force=False):
    """Keras's, plus the per-step loss buffer when `steps_per_execution > 1`."""
    size = int(self.steps_per_execution or 1)
    current = self.__dict__.get('_tf_mp_step_losses')
    if size > 1 and (current is None or current.shape[0] != size):
      with self.distribute_strategy.scope(), tf.init_scope():
        # Kept out of Keras's tracking: it is not a weight and is not saved.
        self.__dict__['_tf_mp_step_losses'] = tf.Variable(
            tf.zeros([size]), trainable=False, name='tf_mp_step_losses',
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.MEAN)
      force = True
    elif size == 1 and current is not None:
      self.__dict__['_tf_mp_step_losses'] = None
      force = True
    return super().make_train_function(force=force)

  def test_step(self, data):
    with self._replica_placement():
      return super().test_step(data)

  def predict_step(self, data):
    with self._replica_placement():
      return super().predict_step(data)

  def traced_train_graph(self, x=None, y=None) -> tf.Graph:
    """The graph of the training step Keras traced (forward, `tf.gradients`, update).

    Args:
      x, y: a batch to trace a step with when `fit` has not run yet (the
        step is traced, not run: no weight changes). After `fit` the traced
        step is returned; a batch given then is still checked against the model.

    Returns:
      The `FuncGraph` in which the last `train_step` was traced.

    Raises:
      TfMpError: no step has been traced and no batch was given, the batch
        does not fit the model, or the model is not compiled.
    """
    if x is not None and y is not None:
      # One line, not Keras's shape errors from deep inside the trace; and a
      # batch that does not fit is refused after `fit` too, not ignored.
      self._check_input_shape(x, 'placement_report')
      if np.shape(x)[:1] != np.shape(y)[:1]:
        raise TfMpError(f'placement_report: x has shape {list(np.shape(x))} but y has '
                        f'{list(np.shape(y))}; expected one label per row of x')
    if self._tf_mp_train_graph is not None:
      return self._tf_mp_train_graph
    if x is None or y is None:
      raise TfMpError('no training step has been traced yet; call fit first or '
                      'pass a batch (x, y) to trace one')
    if not self.compiled:
      raise TfMpError('the model is not compiled; call model.compile(optimizer, '
                      'loss) before asking for the training step')
    data = (tf.convert_to_tensor(x), tf.convert_to_tensor(y))
    with self.distribute_strategy.scope():  # as Keras's fit builds them
      self._symbolic_build(data_batch=data)
      if self.optimizer is not None and not self.optimizer.built:
        self.optimizer.build(self.trainable_variables)
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), data)
    strategy = self.distribute_strategy

    @tf.autograph.experimental.do_not_convert
    def one_step(batch):
      return strategy.run(self.train_step, args=(batch,))

    tf.function(one_step).get_concrete_function(spec)
    return self._tf_mp_train_graph


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Model(_PlacedTraining, keras.Model):
  """A `keras.Model` whose `fit` runs every backward op on its forward op's device.

  Use it as `keras.Model`: functional (`tf_mp.keras.Model(inputs, outputs)`)
  or subclassed (`class MyModel(tf_mp.keras.Model)`), with `on_device` layers
  for placement. Only `train_step` differs from Keras (see
  `_PlacedTraining.train_step`); compile, fit and its callbacks, evaluate,
  predict, save/load and summary are Keras's own.

  Attributes:
    loss_device: where the loss runs (optional; a functional model whose
      output comes from an `on_device` layer uses that layer's device).
  """

  def __new__(cls, *args, **kwargs):
    if cls is Model and functional_init_arguments(args, kwargs):
      return keras_functional.Functional.__new__(FunctionalModel)
    return super().__new__(cls, *args, **kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FunctionalModel(Model, keras_functional.Functional):
  """The functional form of `tf_mp.keras.Model` (what `Model(inputs, outputs)` returns)."""

  def __init__(self, inputs, outputs, name=None, **kwargs):
    keras_functional.Functional.__init__(self, inputs, outputs, name=name, **kwargs)


def _check_batch_size(where: str, batch_size) -> None:
  """Keras takes 0 for its default and fails deep for a negative batch size."""
  if batch_size is not None:
    positive_int(f'{where}: batch_size', batch_size)


@contextlib.contextmanager
def _label_errors(where: str):
  """A label outside the logits found while running (a dataset's labels) as one line."""
  try:
    yield
  except tf.errors.InvalidArgumentError as e:
    found = re.search(r'Received a label value of (-?\d+) which is outside the valid '
                      r'range of \[0, (\d+)\)', str(e))
    if not found:
      raise
    raise TfMpError(f'{where}: label {found.group(1)} is outside [0, {found.group(2)}) '
                    '(found in a batch while running; the model has that many logits '
                    'and a sparse categorical cross-entropy loss)') from None


def keras_weights(model) -> dict:
  """`{path: weight}` for a Keras model's weights (`sub_model_1/hidden/kernel`, ...)."""
  has_attributes('keras_weights: model', model, ('weights',), 'a Keras model or layer')
  return {w.path: w for w in model.weights}


def module_variables(module: tf.Module) -> dict:
  """`{name: variable}` for a `tf.Module`'s variables, without the `:0`."""
  result = {}
  for var in module.variables:
    name = var.name[:-2] if var.name.endswith(':0') else var.name
    result[name] = var
  return result


def _named(obj) -> dict:
  if isinstance(obj, keras.Model):
    return {k: w.value for k, w in keras_weights(obj).items()}
  if isinstance(obj, tf.Module):
    return module_variables(obj)
  raise TfMpError(f'copy_weights: {type(obj).__name__} is neither a Keras '
                  'model nor a tf.Module')


def copy_weights(source, target) -> None:
  """Copies every weight from `source` to the same-named weight of `target`.

  Either side is a Keras model (`tf_mp.keras.build_model`) or a `tf.Module`
  (`tf_mp.build_model`); names are the tf_mp names
  (`sub_model_1/hidden/kernel`, ..., `head/bias`). Nothing is written unless
  every name and shape matches.

  Raises:
    TfMpError: the two sides do not have the same names and shapes.
  """
  src, dst = _named(source), _named(target)
  if set(src) != set(dst):
    missing = sorted(set(src) - set(dst))
    extra = sorted(set(dst) - set(src))
    raise TfMpError(f'copy_weights: names differ; only in source: {missing}, '
                    f'only in target: {extra}')
  for name, var in src.items():
    if tuple(var.shape) != tuple(dst[name].shape):
      raise TfMpError(f'copy_weights: {name!r} has shape {list(var.shape)} in '
                      f'the source and {list(dst[name].shape)} in the target')
  values = {name: np.asarray(var.numpy() if hasattr(var, 'numpy') else var)
            for name, var in src.items()}
  for name, var in dst.items():
    var.assign(values[name])


def build_model(devices=None, config=None) -> Model:
  """Builds the document's model as a functional `tf_mp.keras.Model`.

  `head(concat([sub_model_1(x), sub_model_2(x), sub_model_3(x)]))`, the model
  of `tf_mp.build_model`: same weight names (`sub_model_k/hidden/kernel`, ...,
  `head/kernel`, `head/bias`) and, for the same `config.seed`, the same
  initial values.

  Args:
    devices: one device per sub-model (`['cpu:0', 'cpu:1', 'cpu:2']`,
      `'gpu:0,gpu:1,gpu:2'`), `'auto'`, None (no placement), or a
      `tf_mp.distribute.StrategyLayout`: then the model is built under its scope on its
      first group, and each replica runs on its own group
      (`Model.distribute_over`).
    config: a `tf_mp.ModelConfig`; the document's widths when None. Only
      `concat='tf'` (`keras.layers.Concatenate`) exists in this form.

  Returns:
    A `tf_mp.keras.Model` mapping `[batch, input_units]` float32 to logits
    `[batch, num_classes]`; the concat, head and loss run on the first
    sub-model's device. Not compiled.

  Raises:
    TfMpError: a device does not exist or the config is invalid.
  """
  config = instance_of('config', ModelConfig() if config is None else config,
                       ModelConfig, 'a tf_mp.ModelConfig')
  if config.concat != 'tf':
    raise TfMpError(f'concat {config.concat!r}: the Keras form joins with '
                    'keras.layers.Concatenate; expected concat="tf"')
  layout = devices if hasattr(devices, 'groups') and hasattr(devices, 'scope') else None
  if layout is not None:
    devices = list(layout.groups[0]) if any(layout.groups[0]) else None
  scope = layout.scope() if layout is not None else contextlib.nullcontext()
  placed = resolve_devices(devices, len(config.sub_models), 'sub-models')
  output_device = placed[0]

  def place(layer, device):
    return on_device(layer, device) if device else layer

  with scope:
    features = keras.Input((config.input_units,), name='features')
    outputs = [
        place(SubModel(sub.hidden_units, sub.output_units, config.seed,
                       name=f'sub_model_{k + 1}'), placed[k])(features)
        for k, sub in enumerate(config.sub_models)
    ]
    joined = place(keras.layers.Concatenate(axis=-1, name='concat'),
                   output_device)(outputs) if len(outputs) > 1 else outputs[0]
    head = keras.layers.Dense(
        config.num_classes,
        kernel_initializer=NameSeededGlorotUniform(config.seed, 'head/kernel'),
        name='head')
    logits = place(head, output_device)(joined)
    model = Model(features, logits, name='concat_model')
  if layout is not None:
    model.distribute_over(layout)
  return model
