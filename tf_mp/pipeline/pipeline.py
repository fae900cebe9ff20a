"""The document's sequential form: stages in sequence on devices, GPipe micro-batches.

Section 4 of the source document describes the other shape of model
parallelism: input -> sub-model 1 -> sub-model 2 -> ... -> output, each
sub-model on its own device. Run naively, one device works at a time. GPipe
(Huang et al., 2019) splits each batch into M micro-batches so that stage k can
work on micro-batch i while stage k+1 works on micro-batch i-1, accumulates the
gradients of all micro-batches and applies one synchronous update, so training
computes exactly what full-batch training computes.

In TensorFlow no schedule has to be written: each micro-batch's forward and
backward pass is an independent chain of ops, each op placed on its stage's
device, and the dataflow executor runs whatever is ready. What matters is that
no false dependency (a control edge, a shared op) serialises the chains; the
tests check the traced graph for that.
"""

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tf_mp.checks import (boolean, instance_of, integer, module_name, positive_int,
                          short_repr)
from tf_mp.dense import Dense
from tf_mp.devices import device_scope
from tf_mp.devices import (DeviceSpec, canonical_device, resolve_devices,
                           short_device_name)
from tf_mp.errors import TfMpError
from tf_mp.memory import MAX_TENSOR_ELEMENTS, check_parameters_fit
from tf_mp.sub_models import check_features

StageLike = Union[tf.Module, Callable[[Optional[str]], tf.Module]]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Widths of a pipeline: `input_units` then, per stage, its dense layers' widths.

  The default is three stages `128 -> 256 -> 256 -> 10`: one dense layer per
  stage, ReLU after every layer but the last (which makes the logits).

  Attributes:
    input_units: width of the input features.
    stages: one tuple of layer widths per stage, e.g. `((256, 256), (10,))` for
      two stages, the first with two layers (uneven splits are allowed).
    seed: seeds the Glorot-uniform kernels (biases start at zero).
  """
  input_units: int = 128
  stages: Tuple[Tuple[int, ...], ...] = ((256,), (256,), (10,))
  seed: int = 0

  def __post_init__(self):
    """Checks every field at creation: one TfMpError line naming it."""
    positive_int('PipelineConfig.input_units', self.input_units)
    integer('PipelineConfig.seed', self.seed)
    stages = self.stages
    if not isinstance(stages, (tuple, list)) or not stages or not all(
        isinstance(units, (tuple, list)) and units for units in stages):
      raise TfMpError(f'PipelineConfig.stages must be a non-empty sequence of '
                      f'non-empty width tuples such as ((256,), (10,)), got '
                      f'{short_repr(stages)}')
    for k, units in enumerate(stages):
      for j, width in enumerate(units):
        positive_int(f'PipelineConfig stage_{k + 1}: units[{j}]', width)
    object.__setattr__(self, 'stages', tuple(tuple(int(u) for u in units)
                                             for units in stages))
    widths = [self.input_units] + [u for units in self.stages for u in units]
    check_parameters_fit(sum((a + 1) * b for a, b in zip(widths, widths[1:])),
                         'PipelineConfig')

  @property
  def num_classes(self) -> int:
    """Width of the last layer: the number of logits."""
    return self.stages[-1][-1]

  def stage_input_units(self, k: int) -> int:
    """Input width of stage `k` (0-based)."""
    return self.input_units if k == 0 else self.stages[k - 1][-1]


class PipelineStage(tf.Module):
  """A chain of dense layers on one device: one stage of a `Pipeline`.

  Shapes: `[batch, input_units]` float32 -> `[batch, units[-1]]` float32.
  Variables: `<name>/layer_j/kernel`, `<name>/layer_j/bias` for j = 0, 1, ...
  Devices: with `device` set, the variables live there and the forward pass
  runs there; `tf.gradients` puts the backward pass there too.

  Attributes:
    layers: the `Dense` layers, in order.
    device: canonical device name, or None.
    input_units, output_units: the stage's widths.
    units: the width of each layer.
    final: True when the last layer has no ReLU (the pipeline's logits).
  """

  def __init__(self,
               units: Sequence[int],
               device: Optional[str] = None,
               *,
               input_units: int,
               final: bool = False,
               seed: int = 0,
               name: str = 'stage'):
    super().__init__(name=module_name('PipelineStage name', name))
    units = tuple(units)
    if not units:
      raise TfMpError(f'{name}: units is empty; expected at least one layer width')
    for label, value in [('input_units', input_units)] + [
        (f'units[{j}]', u) for j, u in enumerate(units)]:
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise TfMpError(f'{name}: {label} must be a positive integer, got {value!r}')
    self.device = resolve_devices([device], 1)[0] if device else None
    self.input_units = int(input_units)
    self.units = tuple(int(u) for u in units)
    self.output_units = self.units[-1]
    self.final = final
    self.seed = seed
    widths = (self.input_units,) + self.units
    with self.name_scope:
      self.layers = [
          Dense(widths[j], widths[j + 1],
                None if final and j == len(units) - 1 else tf.nn.relu,
                device=self.device, seed=seed, name=f'layer_{j}')
          for j in range(len(units))
      ]

  @tf.Module.with_name_scope
  def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
    check_features(inputs, self.input_units, self.name)
    with device_scope(self.device):
      for layer in self.layers:
        inputs = layer(inputs)
      return inputs


def pipeline_stage(k: int,
                   device: Optional[str] = None,
                   *,
                   input_units: Optional[int] = None,
                   units: Optional[Sequence[int]] = None,
                   final: Optional[bool] = None,
                   seed: int = 0) -> PipelineStage:
  """Builds stage `k` (1-based) of a pipeline, named `stage_k`.

  With the defaults, stages 1, 2, 3 are those of `PipelineConfig()`:
  `128 -> 256` (ReLU), `256 -> 256` (ReLU), `256 -> 10` (logits).

  Args:
    k: the stage number, from 1.
    device: where its variables and computation live, e.g. "cpu:1"; None
      leaves placement to TensorFlow.
    input_units: input width; default from `PipelineConfig()` for k <= 3.
    units: widths of its dense layers; default from `PipelineConfig()`.
    final: True when the stage makes the logits (no ReLU on its last layer);
      default True for stage 3 only.
    seed: seeds the Glorot-uniform kernels.

  Returns:
    A `PipelineStage` mapping `[batch, input_units]` to `[batch, units[-1]]`.

  Raises:
    TfMpError: k is not a positive integer, or a width is missing or invalid.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise TfMpError(f'stage number must be a positive integer, got {k!r}')
  default = PipelineConfig()
  known = k <= len(default.stages)
  if not known and (input_units is None or units is None):
    raise TfMpError(f'stage {k}: the default configuration has '
                    f'{len(default.stages)} stages; give input_units and units')
  return PipelineStage(
      units if units is not None else default.stages[k - 1],
      device,
      input_units=(input_units if input_units is not None else
                   default.stage_input_units(k - 1)),
      final=final if final is not None else k == len(default.stages),
      seed=seed,
      name=f'stage_{k}')


def theoretical_bubble(num_stages: int, num_micro_batches: int) -> float:
  """GPipe's bubble fraction (K-1)/(M+K-1): the idle share of each device.

  Raises:
    TfMpError: K or M is not a positive integer.
  """
  num_stages = positive_int('num_stages', num_stages)
  num_micro_batches = positive_int('num_micro_batches', num_micro_batches)
  return (num_stages - 1) / (num_micro_batches + num_stages - 1)


def _short(device: Optional[str]) -> str:
  return short_device_name(device, unplaced='unplaced')


class Pipeline(tf.Module):
  """Stages in sequence, stage k on device k, trained GPipe-style.

  Shapes: `[batch, input_units]` float32 -> logits `[batch, num_classes]`.
  Devices: stage k computes on `devices[k]` (its variables live there); the
  loss is computed on `output_device`, the last stage's device.

  Each batch is split into `num_micro_batches` (M) equal micro-batches. The
  forward and backward pass of micro-batch i form a chain of ops of their own,
  so TensorFlow's executor overlaps stage k on micro-batch i with stage k+1 on
  micro-batch i-1. `loss_and_gradients` sums the per-micro-batch gradients of
  `loss_fn / M`, so for a mean loss the loss and the gradients equal those of
  the whole batch (GPipe's synchronous semantics); `tf_mp.Trainer` applies
  them in one Adam update.

  With `remat=True` each stage is wrapped in `tf.recompute_grad`: its
  activations are dropped after the forward pass and recomputed in the backward
  pass (after the incoming gradient is ready), so only stage inputs are kept.

  Attributes:
    stages: the stage modules, in order.
    devices: the device of each stage.
    output_device: where the logits and the loss are (the last stage's device).
    num_micro_batches: M.
    remat: whether stages are recomputed in the backward pass.
    config: a `PipelineConfig` describing the widths (`config.input_units`,
      `config.num_classes`, as `tf_mp.Trainer` reads them).
  """

  def __init__(self,
               stages: Sequence[StageLike],
               devices: DeviceSpec = None,
               num_micro_batches: int = 1,
               remat: bool = False,
               name: str = 'pipeline'):
    """Builds a pipeline.

    Args:
      stages: the stages in order: modules (with `input_units`,
        `output_units` and `device` attributes, e.g. `pipeline_stage(k, ...)`
        or `sub_model_k(...)`), or callables `device -> module` that build
        one on the device they are given.
      devices: one device per stage (fewer are used round-robin), `'auto'`, or
        None to keep each module's own device. A built module's device must
        match the device asked for it; a module built without a device
        computes on the device asked for, but its variables stay where they
        were created (pass a callable to have them created there too).
      num_micro_batches: M >= 1; every batch size must be a multiple of M.
      remat: recompute each stage's activations in the backward pass.
      name: the module name.

    Raises:
      TfMpError: no stages, M < 1, a device mismatch or a stage whose output
        width is not the next stage's input width.
    """
    super().__init__(name=module_name('Pipeline name', name))
    instance_of('stages', stages, (list, tuple), 'a list of stage modules or builders')
    if not stages:
      raise TfMpError('a pipeline needs at least one stage; got none')
    self.num_micro_batches = positive_int('num_micro_batches', num_micro_batches)
    self.remat = boolean('remat', remat)
    wanted = (resolve_devices(devices, len(stages), 'stages') if devices is not None else
              [None] * len(stages))
    built = []
    for k, (stage, device) in enumerate(zip(stages, wanted)):
      if not isinstance(stage, tf.Module) and callable(stage):
        stage = stage(device)
      if not isinstance(stage, tf.Module):
        raise TfMpError(f'stage {k + 1} is a {type(stage).__name__}; expected a '
                        'tf.Module or a callable that builds one from a device')
      own = getattr(stage, 'device', None)
      if device is not None and own is not None and (
          canonical_device(own) != canonical_device(device)):
        raise TfMpError(f'stage {k + 1} ({stage.name}) was built on {_short(own)} '
                        f'but devices asks for {_short(device)}; build it there '
                        'or pass devices=None')
      for attr in ('input_units', 'output_units'):
        if not isinstance(getattr(stage, attr, None), (int, np.integer)):
          raise TfMpError(f'stage {k + 1} ({stage.name}) has no integer {attr} '
                          'attribute; expected a module such as pipeline_stage(k)')
      built.append(stage)
    for k in range(len(built) - 1):
      out, nxt = built[k], built[k + 1]
      if out.output_units != nxt.input_units:
        raise TfMpError(
            f'stage {k + 1} ({out.name}) outputs [batch, {out.output_units}] but '
            f'stage {k + 2} ({nxt.name}) expects [batch, {nxt.input_units}]')
    self.stages = built
    self.devices = [
        canonical_device(d) if d else None
        for d in (w or getattr(s, 'device', None) for s, w in zip(built, wanted))
    ]
    self.output_device = self.devices[-1]
    self.config = PipelineConfig(
        input_units=int(built[0].input_units),
        stages=tuple(tuple(getattr(s, 'units', (int(s.output_units),)))
                     for s in built),
        seed=getattr(built[0], 'seed', 0))
    # Not module attributes: tf.Module would walk them looking for variables.
    self._stage_fns = tuple(tf.recompute_grad(s) if self.remat else s for s in built)

  @property
  def num_stages(self) -> int:
    return len(self.stages)

  def theoretical_bubble(self) -> float:
    """GPipe's bubble fraction (K-1)/(M+K-1) for K stages and M micro-batches."""
    return theoretical_bubble(self.num_stages, self.num_micro_batches)

  @property
  def input_spec(self) -> tf.TensorSpec:
    """One batch of features: float32 `[None, config.input_units]`."""
    return tf.TensorSpec([None, self.config.input_units], tf.float32)

  @property
  def num_classes(self) -> int:
    return self.config.num_classes

  def check_batch_size(self, batch_size: int) -> None:
    """Raises TfMpError unless `batch_size` splits into M equal micro-batches.

    Also refuses a batch whose activations would exceed the largest tensor
    TensorFlow's kernels handle (`tf_mp.memory.MAX_TENSOR_ELEMENTS`).
    """
    batch_size = positive_int('batch_size', batch_size)
    widest = max(self.config.input_units,
                 max(u for units in self.config.stages for u in units))
    if batch_size * widest > MAX_TENSOR_ELEMENTS:
      raise TfMpError(f'batch size {batch_size} makes activations of '
                      f'{batch_size * widest:,} elements ({batch_size} x width '
                      f'{widest}), more than TensorFlow handles; expected at '
                      f'most {MAX_TENSOR_ELEMENTS // widest:,}')
    if batch_size % self.num_micro_batches:
      raise TfMpError(
          f'batch size {batch_size} does not split into num_micro_batches='
          f'{self.num_micro_batches} equal micro-batches; expected a positive '
          f'multiple of {self.num_micro_batches}')

  def _split(self, tensor: tf.Tensor, device: Optional[str], what: str) -> List[tf.Tensor]:
    m = self.num_micro_batches
    if m == 1:
      return [tensor]
    if tensor.shape[0] is not None:  # Unknown while tracing: asserted below.
      self.check_batch_size(tensor.shape[0])
    with device_scope(device), tf.name_scope(f'split_{what}'):
      if tensor.shape[0] is None:
        tf.debugging.assert_equal(
            tf.shape(tensor)[0] % m, 0,
            message=f'batch size is not a multiple of num_micro_batches={m}')
      return tf.split(tensor, m, axis=0)

  def _forward(self, micro_batch: tf.Tensor, i: int) -> tf.Tensor:
    outputs = micro_batch
    with tf.name_scope(f'micro_batch_{i}'):
      for fn, device in zip(self._stage_fns, self.devices):
        with device_scope(device):
          outputs = fn(outputs)
    return outputs

  def __call__(self, inputs) -> tf.Tensor:
    """Logits `[batch, num_classes]` on `output_device`, micro-batch by micro-batch."""
    check_features(inputs, self.config.input_units, self.name)
    inputs = tf.convert_to_tensor(inputs, tf.float32)
    outputs = [self._forward(x, i)
               for i, x in enumerate(self._split(inputs, self.devices[0], 'features'))]
    if len(outputs) == 1:
      return outputs[0]
    with device_scope(self.output_device), tf.name_scope('join_micro_batches'):
      return tf.concat(outputs, axis=0)

  def loss_and_gradients(
      self, features: tf.Tensor, labels: tf.Tensor,
      loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """The batch loss and its gradients, accumulated over the micro-batches.

    Args:
      features: float32 `[batch, input_units]`, batch a multiple of M.
      labels: `[batch]` labels for `loss_fn`.
      loss_fn: `(logits, labels) -> scalar`, a mean over the examples (the
        micro-batch losses are averaged, which equals the batch mean only for
        a mean).

    Returns:
      `(loss, gradients)`: the scalar loss on `output_device` and one gradient
      per variable of `self.trainable_variables`, in that order, each summed on
      its variable's device.

    Raises:
      TfMpError: the batch size is known and not a multiple of M, or the
        features do not have `input_units` columns.
    """
    check_features(features, self.config.input_units, self.name)
    features = tf.convert_to_tensor(features, tf.float32)
    xs = self._split(features, self.devices[0], 'features')
    ys = self._split(labels, self.output_device, 'labels')
    variables = self.trainable_variables
    m = float(self.num_micro_batches)
    losses, grads = [], [None] * len(variables)
    for i, (x, y) in enumerate(zip(xs, ys)):
      logits = self._forward(x, i)
      with device_scope(self.output_device), tf.name_scope(f'micro_batch_{i}/loss'):
        loss = loss_fn(logits, y) / m
      losses.append(loss)
      with tf.name_scope(f'micro_batch_{i}_backward'):
        micro_grads = tf.gradients(loss, variables)
      # A running sum in micro-batch order, not one AddN at the end: an AddN
      # would keep all M gradients of every variable alive until the last
      # micro-batch finishes. The adds are on the accumulation path only; no
      # micro-batch's forward or backward ops wait for another's.
      with tf.name_scope('accumulate_gradients'):
        for j, (var, grad) in enumerate(zip(variables, micro_grads)):
          if grad is None:
            continue
          if grads[j] is None:
            with device_scope(var.device):
              grads[j] = grad if len(xs) == 1 else tf.identity(grad)
            continue
          # The op computing this micro-batch's gradient of `var` waits for the
          # running sum of the previous ones: without that the executor may
          # compute all M full-size weight gradients before adding any (peak
          # memory growing with M). Both ops are on `var`'s device, which
          # does one micro-batch's work at a time anyway; activation
          # gradients, which carry the backward pass to earlier stages, do
          # not wait.
          _producer(grad)._add_control_input(grads[j].op)  # pylint: disable=protected-access
          with device_scope(var.device):
            grads[j] = grads[j] + grad
    with device_scope(self.output_device), tf.name_scope('loss'):
      total = losses[0] if len(losses) == 1 else tf.add_n(losses)
    return total, grads


def _producer(tensor: tf.Tensor) -> tf.Operation:
  """The op that really computes `tensor`, looking through identities."""
  while tensor.op.type in ('Identity', 'IdentityN'):
    op = tensor.op
    tensor = op.inputs[tensor.value_index if op.type == 'IdentityN' else 0]
  return tensor.op


def build_pipeline(devices: DeviceSpec = None,
                   config: Optional[PipelineConfig] = None,
                   *,
                   num_micro_batches: int = 1,
                   remat: bool = False) -> Pipeline:
  """Builds the pipeline of `config`, stage k on `devices[k]`.

  Args:
    devices: one device per stage (`'cpu:0,cpu:1,cpu:2'`, fewer round-robin),
      `'auto'`, or None for no placement. See `tf_mp.resolve_devices`.
    config: a `PipelineConfig`; three stages 128 -> 256 -> 256 -> 10 when None.
    num_micro_batches: M, the micro-batches per batch.
    remat: recompute activations in the backward pass.

  Returns:
    A `Pipeline` with stages named `stage_1`, `stage_2`, ...

  Raises:
    TfMpError: a device does not exist, or the config or M is invalid.
  """
  config = instance_of('config', PipelineConfig() if config is None else config,
                       PipelineConfig, 'a tf_mp.pipeline.PipelineConfig')
  positive_int('num_micro_batches', num_micro_batches)
  boolean('remat', remat)
  placed = resolve_devices(devices, len(config.stages), 'stages')
  stages = [
      PipelineStage(units, placed[k], input_units=config.stage_input_units(k),
                    final=k == len(config.stages) - 1, seed=config.seed,
                    name=f'stage_{k + 1}')
      for k, units in enumerate(config.stages)
  ]
  return Pipeline(stages, None, num_micro_batches=num_micro_batches, remat=remat)
