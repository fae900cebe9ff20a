"""Reports for a `tf_mp.Pipeline`: where each stage lives, its balance, per-device time.

* `pipeline_placement(pipeline, trainer)`: each stage's variable and op devices,
  read from the traced training step (a `tf_mp.PlacementReport`).
* `balance_report(pipeline)`: parameters, forward FLOPs per example and the
  measured forward+backward time of each stage, and the contiguous split of
  the layers that evens the measured time.
* `device_time_report(pipeline, features, labels)`: busy, idle and bubble
  fraction of each device over a short window traced with TensorFlow's
  profiler, beside GPipe's (K-1)/(M+K-1).

How the per-device time is measured. The profiler's trace (`.xplane.pb`) holds,
on the host plane, one event per executed op named `op_name:OpType`, on the
executor thread that ran it. Logical CPU devices share the process's thread
pools, so the thread does not say which device an op belonged to; the traced
graph does: each event is attributed to the device its op was placed on in the
function graph (ops TensorFlow adds at run time, such as `_Send`/`_Recv`, by
the stage named in their scope). A device is busy while at least one of its
ops runs; the window is the function call (`EagerLocalExecute`) of each step.
On a GPU the same code reads the same host events; the GPU's own stream events
are not used.
"""

import dataclasses
import re
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_mp import profiling
from tf_mp.devices import device_scope
from tf_mp.devices import device_key, short_device_name
from tf_mp.errors import TfMpError
from tf_mp.pipeline import Pipeline, PipelineStage
from tf_mp.placement import PartPlacement, PlacementReport
from tf_mp.trainer import Trainer, sparse_softmax_loss


def _check_pipeline(pipeline) -> None:
  if not isinstance(pipeline, Pipeline):
    raise TfMpError(f'expected a tf_mp.Pipeline, got a {type(pipeline).__name__}')


def _stage_pattern(name: str) -> re.Pattern:
  # A module's ops are in scope `name/`, or `name_1/` ... when it is called
  # again (one call per micro-batch), also inside `gradients/...` scopes.
  return re.compile(rf'(^|/){re.escape(name)}(_\d+)?/')


# Placement.


def pipeline_placement(pipeline: Pipeline,
                       trainer: Optional[Trainer] = None) -> PlacementReport:
  """Each stage's variable devices and op devices in the traced training step.

  Args:
    pipeline: a `tf_mp.Pipeline` whose stages have distinct names.
    trainer: the `Trainer` whose step is inspected; a fresh one when None
      (which changes nothing in the pipeline).

  Returns:
    A `tf_mp.PlacementReport` with one part per stage.
  """
  _check_pipeline(pipeline)
  graph = (trainer or Trainer(pipeline)).traced_step_graph()
  parts = []
  for stage, device in zip(pipeline.stages, pipeline.devices):
    pattern = _stage_pattern(stage.name)
    ops = [op for op in graph.get_operations() if op.device and pattern.search(op.name)]
    variables = stage.trainable_variables
    parts.append(
        PartPlacement(
            name=stage.name,
            requested=device,
            variable_devices=sorted({v.device for v in variables}),
            op_devices=sorted({op.device for op in ops}),
            parameters=int(sum(np.prod(v.shape) for v in variables)),
            bytes=int(sum(np.prod(v.shape) * v.dtype.size for v in variables))))
  return PlacementReport(parts)


# Balance.


@dataclasses.dataclass
class StageBalance:
  """One stage in a `BalanceReport`.

  Attributes:
    name: the stage's name.
    device: its device.
    parameters: scalars in its variables.
    flops_per_example: forward FLOPs per example, 2*in*out per kernel plus one
      add per bias element (activations not counted); the backward pass costs
      about twice that.
    milliseconds: measured forward+backward time of one batch of
      `BalanceReport.batch_size`, median of the repeats.
  """
  name: str
  device: Optional[str]
  parameters: int
  flops_per_example: int
  milliseconds: float


@dataclasses.dataclass
class BalanceReport:
  """`balance_report`'s result; `str()` gives the printed table.

  Attributes:
    stages: one `StageBalance` per stage.
    batch_size: the batch the stages were timed on.
    suggested_split: layer widths per stage (a `PipelineConfig.stages` value)
      that minimise the slowest stage's measured time, or None when the stages
      are not `PipelineStage`s (their layers are unknown).
    suggested_milliseconds: the predicted time of each suggested stage (sum of
      its layers' measured times).
  """
  stages: List[StageBalance]
  batch_size: int
  suggested_split: Optional[Tuple[Tuple[int, ...], ...]]
  suggested_milliseconds: Optional[List[float]]

  @property
  def imbalance(self) -> float:
    """Slowest stage time / mean stage time (1.0 is perfectly balanced)."""
    times = [s.milliseconds for s in self.stages]
    mean = sum(times) / len(times)
    return max(times) / mean if mean > 0 else 1.0

  def __str__(self) -> str:
    header = ('stage', 'device', 'params', 'fwd FLOPs/example', f'fwd+bwd ms (batch {self.batch_size})')
    rows = [header] + [(s.name, short_device_name(s.device), f'{s.parameters:,}',
                        f'{s.flops_per_example:,}', f'{s.milliseconds:.3f}')
                       for s in self.stages]
    lines = ['Stage balance', _table(rows),
             f'slowest / mean stage time: {self.imbalance:.2f}']
    if self.suggested_split is not None:
      predicted = ', '.join(f'{t:.3f}' for t in self.suggested_milliseconds)
      lines.append(f'suggested split (layer widths per stage): '
                   f'{self.suggested_split}, predicted ms: {predicted}')
    return '\n'.join(lines)


def _table(rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                   for r in rows)


def _flops_per_example(module: tf.Module) -> int:
  flops = 0
  for var in module.trainable_variables:
    if var.shape.rank == 2:
      flops += 2 * int(var.shape[0]) * int(var.shape[1])
    elif var.shape.rank == 1:
      flops += int(var.shape[0])
  return flops


def _time_forward_backward(module: Callable, input_units: int, variables,
                           device: Optional[str], batch_size: int,
                           repeats: int, seed: int, inner: int = 8) -> float:
  """Median milliseconds of forward + `tf.gradients` of `module` on one batch.

  Each timed call runs `inner` passes in a `tf.range` loop, so the Python
  call's overhead (about as long as a small stage's pass) is spread thin.
  """
  with device_scope(device):
    inputs = tf.random.stateless_normal([batch_size, input_units], seed=[seed, 0])

  @tf.function
  def passes(x, n):
    total = tf.constant(0.0)
    for i in tf.range(n):
      with device_scope(device):
        # Depends on i, so no pass can be hoisted out of the loop.
        xi = x + tf.cast(i, tf.float32) * 1e-6
        loss = tf.reduce_sum(module(xi))
      grads = tf.gradients(loss, [xi] + list(variables))
      total += tf.add_n([tf.reduce_sum(tf.reshape(g, [-1])[:1]) for g in grads])
    return total

  n = tf.constant(inner)
  passes(inputs, n).numpy()  # Trace and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    passes(inputs, n).numpy()
    times.append((time.perf_counter() - start) * 1e3 / inner)
  return statistics.median(times)


def _best_split(times: Sequence[float], parts: int) -> List[int]:
  """Cut points splitting `times` into `parts` contiguous runs minimising the max sum."""
  n = len(times)
  prefix = np.concatenate([[0.0], np.cumsum(times)])
  inf = float('inf')
  # best[k][i]: the smallest max-sum splitting the first i items into k runs.
  best = [[inf] * (n + 1) for _ in range(parts + 1)]
  cut = [[0] * (n + 1) for _ in range(parts + 1)]
  best[0][0] = 0.0
  for k in range(1, parts + 1):
    for i in range(k, n + 1):
      for j in range(k - 1, i):
        cost = max(best[k - 1][j], prefix[i] - prefix[j])
        if cost < best[k][i]:
          best[k][i], cut[k][i] = cost, j
  bounds, i = [], n
  for k in range(parts, 0, -1):
    bounds.append(i)
    i = cut[k][i]
  return sorted(bounds)


def balance_report(pipeline: Pipeline,
                   *,
                   batch_size: int = 64,
                   repeats: int = 5,
                   seed: int = 0) -> BalanceReport:
  """Parameters, FLOPs and measured time per stage, and a split that evens the time.

  Each stage (and, for `PipelineStage`s, each of its dense layers) is timed
  alone on its device: forward plus `tf.gradients` on a random batch, the
  median of `repeats` runs. The suggested split keeps the layers in order and
  assigns them to the same number of stages so that the slowest stage's
  predicted time (the sum of its layers' times) is as small as possible.

  Args:
    pipeline: a `tf_mp.Pipeline`.
    batch_size: examples per timed batch.
    repeats: timed runs per stage (the median is reported).
    seed: seeds the random batch.

  Returns:
    A `BalanceReport`; print it for the table.

  Raises:
    TfMpError: not a pipeline, or batch_size/repeats not positive.
  """
  _check_pipeline(pipeline)
  for label, value in (('batch_size', batch_size), ('repeats', repeats)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise TfMpError(f'{label} must be a positive integer, got {value!r}')
  stages = []
  for stage, device in zip(pipeline.stages, pipeline.devices):
    stages.append(
        StageBalance(
            name=stage.name,
            device=device,
            parameters=int(sum(np.prod(v.shape) for v in stage.trainable_variables)),
            flops_per_example=_flops_per_example(stage),
            milliseconds=_time_forward_backward(
                stage, int(stage.input_units), stage.trainable_variables, device,
                batch_size, repeats, seed)))
  split = predicted = None
  if all(isinstance(s, PipelineStage) for s in pipeline.stages):
    layers = [(layer, device) for s, device in zip(pipeline.stages, pipeline.devices)
              for layer in s.layers]
    times = [_time_forward_backward(layer, layer.input_units, layer.trainable_variables,
                                    device, batch_size, repeats, seed)
             for layer, device in layers]
    parts = min(len(pipeline.stages), len(layers))
    bounds = _best_split(times, parts)
    starts = [0] + bounds[:-1]
    split = tuple(tuple(layer.output_units for layer, _ in layers[a:b])
                  for a, b in zip(starts, bounds))
    predicted = [float(sum(times[a:b])) for a, b in zip(starts, bounds)]
  return BalanceReport(stages, batch_size, split, predicted)


# Per-device time.


@dataclasses.dataclass
class DeviceTime:
  """One device in a `DeviceTimeReport`; times are means per traced step.

  Attributes:
    device: the device.
    stages: names of the stages placed on it.
    busy_ms: time during which at least one of its ops was running.
    window_ms: the step's wall time (the traced function call).
    ops: op events attributed to it per step.
  """
  device: str
  stages: List[str]
  busy_ms: float
  window_ms: float
  ops: float

  @property
  def idle_ms(self) -> float:
    return max(self.window_ms - self.busy_ms, 0.0)

  @property
  def busy_fraction(self) -> float:
    return min(self.busy_ms / self.window_ms, 1.0) if self.window_ms > 0 else 0.0

  @property
  def idle_fraction(self) -> float:
    return 1.0 - self.busy_fraction


@dataclasses.dataclass
class DeviceTimeReport:
  """`device_time_report`'s result; `str()` gives the printed table.

  Attributes:
    devices: one `DeviceTime` per device used by the pipeline, in stage order.
    num_stages: K.
    num_micro_batches: M.
    steps: traced steps the means are over.
    step_ms: mean wall time of a traced step.
    unattributed_ms: op time per step that could not be tied to a device.
    trace_dir: where the profiler wrote the trace (None once deleted).
  """
  devices: List[DeviceTime]
  num_stages: int
  num_micro_batches: int
  steps: int
  step_ms: float
  unattributed_ms: float
  trace_dir: Optional[str]

  @property
  def measured_bubble(self) -> float:
    """Mean idle fraction over the devices: the measured bubble."""
    return float(np.mean([d.idle_fraction for d in self.devices]))

  @property
  def theoretical_bubble(self) -> float:
    """GPipe's (K-1)/(M+K-1)."""
    k, m = self.num_stages, self.num_micro_batches
    return (k - 1) / (m + k - 1)

  def __str__(self) -> str:
    rows = [('device', 'stages', 'busy ms', 'idle ms', 'busy', 'idle (bubble)', 'ops')]
    rows += [(short_device_name(d.device), ','.join(d.stages), f'{d.busy_ms:.2f}',
              f'{d.idle_ms:.2f}', f'{d.busy_fraction:.2f}', f'{d.idle_fraction:.2f}',
              f'{d.ops:.0f}') for d in self.devices]
    return '\n'.join([
        f'Per-device time (profiler trace, mean of {self.steps} steps of '
        f'{self.step_ms:.2f} ms; K={self.num_stages} stages, '
        f'M={self.num_micro_batches} micro-batches)',
        _table(rows),
        f'measured bubble (mean idle fraction): {self.measured_bubble:.3f}   '
        f'GPipe (K-1)/(M+K-1): {self.theoretical_bubble:.3f}   '
        f'unattributed op time: {self.unattributed_ms:.2f} ms/step',
    ])


def _attribute(op_name: str, op_devices: Dict[str, str],
               stage_patterns: List[Tuple[re.Pattern, str]]) -> Optional[str]:
  name = op_name
  while True:
    if name in op_devices:
      return op_devices[name]
    # Ops added at run time are named after the op they serve: `x/_12`.
    stripped = re.sub(r'/_\d+$', '', name)
    if stripped == name:
      break
    name = stripped
  for pattern, device in stage_patterns:
    if pattern.search(op_name):
      return device
  return None


def device_time_report(pipeline: Pipeline,
                       features,
                       labels,
                       *,
                       loss_fn: Callable = sparse_softmax_loss,
                       steps: int = 3,
                       warmup: int = 2,
                       logdir: Optional[str] = None) -> DeviceTimeReport:
  """Traces a few forward+backward passes and reports each device's busy time.

  The traced function is `pipeline.loss_and_gradients` (no optimizer update,
  so the pipeline's variables do not change).

  Args:
    pipeline: a `tf_mp.Pipeline` with placed stages.
    features: a batch `[batch, input_units]`, batch a multiple of M.
    labels: its labels `[batch]`.
    loss_fn: the loss, as in `tf_mp.Trainer`.
    steps: traced steps (the report averages them).
    warmup: untraced steps first (tracing, first-run allocations).
    logdir: keep the profiler trace there (TensorBoard's profile plugin reads
      it); a temporary directory, deleted afterwards, when None.

  Returns:
    A `DeviceTimeReport`; print it for the table.

  Raises:
    TfMpError: not a pipeline, a stage is unplaced, or the batch is bad.
  """
  _check_pipeline(pipeline)
  if any(d is None for d in pipeline.devices):
    raise TfMpError('device_time_report needs every stage placed on a device; '
                    f'got devices {list(pipeline.devices)}')
  for label, value in (('steps', steps), ('warmup', warmup)):
    if isinstance(value, bool) or not isinstance(value, int) or value < (label == 'steps'):
      raise TfMpError(f'{label} must be a non-negative integer (steps >= 1), got {value!r}')
  features = tf.convert_to_tensor(features, tf.float32)
  labels = tf.convert_to_tensor(labels)
  pipeline.check_batch_size(features.shape[0])

  @tf.function
  def forward_backward(x, y):
    return pipeline.loss_and_gradients(x, y, loss_fn)

  concrete = forward_backward.get_concrete_function(features, labels)
  op_devices = {op.name: op.device for op in concrete.graph.get_operations() if op.device}
  stage_patterns = [(_stage_pattern(s.name), d)
                    for s, d in zip(pipeline.stages, pipeline.devices)]
  for _ in range(warmup):
    forward_backward(features, labels)

  owned = logdir is None
  logdir = tempfile.mkdtemp(prefix='tf_mp_trace_') if owned else logdir
  tf.profiler.experimental.start(
      logdir, options=tf.profiler.experimental.ProfilerOptions(
          host_tracer_level=2, python_tracer_level=0, device_tracer_level=1))
  try:
    for _ in range(steps):
      forward_backward(features, labels)
  finally:
    tf.profiler.experimental.stop()
  events = profiling.host_events(profiling.load_trace(logdir))
  if owned:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(logdir, ignore_errors=True)
    logdir = None

  fname = concrete.name.decode() if isinstance(concrete.name, bytes) else concrete.name
  windows = sorted((a, b) for name, a, b in events
                   if name.startswith('EagerLocalExecute') and fname in name)
  if not windows:
    raise TfMpError('the profiler trace has no call of the traced function; '
                    'is another profiler session running?')
  devices = list(dict.fromkeys(pipeline.devices))
  busy = {d: 0.0 for d in devices}
  count = {d: 0 for d in devices}
  unattributed = 0.0
  for a, b in windows:
    per_device = {d: [] for d in devices}
    for name, start, end in events:
      # Op events read `op_name:OpType`; runtime events (`Foo::Bar`) are skipped.
      if (':' not in name or '::' in name or name.startswith('EagerLocalExecute') or
          start < a or end > b):
        continue
      op_name = name.split(':', 1)[0]
      device = _attribute(op_name, op_devices, stage_patterns)
      device = next((d for d in devices if device and _same_device(d, device)), None)
      if device is None:
        unattributed += end - start
        continue
      per_device[device].append((start, end))
      count[device] += 1
    for d in devices:
      busy[d] += profiling.union_duration(per_device[d])
  n = len(windows)
  window_ms = sum(b - a for a, b in windows) / n / 1e6
  rows = [
      DeviceTime(device=d,
                 stages=[s.name for s, sd in zip(pipeline.stages, pipeline.devices) if sd == d],
                 busy_ms=busy[d] / n / 1e6, window_ms=window_ms, ops=count[d] / n)
      for d in devices
  ]
  return DeviceTimeReport(rows, pipeline.num_stages, pipeline.num_micro_batches, n,
                          window_ms, unattributed / n / 1e6, logdir)


def _same_device(a: str, b: str) -> bool:
  return device_key(a) == device_key(b)
