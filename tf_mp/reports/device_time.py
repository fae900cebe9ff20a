"""`device_time_report`: busy, idle and bubble fraction of each device of a pipeline.

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

from tf_mp.checks import non_negative_int, optional_callable, positive_int
from tf_mp.devices import device_key, device_scope, short_device_name
from tf_mp.data import check_arrays
from tf_mp.errors import TfMpError
from tf_mp.files import check_path, check_writable_dir
from tf_mp.pipeline import Pipeline, PipelineStage, best_split, theoretical_bubble
from tf_mp.reports import profiling
from tf_mp.reports.placement import check_pipeline, stage_pattern
from tf_mp.reports.table import format_table
from tf_mp.trainer import sparse_softmax_loss


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
    return theoretical_bubble(self.num_stages, self.num_micro_batches)

  def __str__(self) -> str:
    rows = [('device', 'stages', 'busy ms', 'idle ms', 'busy', 'idle (bubble)', 'ops')]
    rows += [(short_device_name(d.device), ','.join(d.stages), f'{d.busy_ms:.2f}',
              f'{d.idle_ms:.2f}', f'{d.busy_fraction:.2f}', f'{d.idle_fraction:.2f}',
              f'{d.ops:.0f}') for d in self.devices]
    return '\n'.join([
        f'Per-device time (profiler trace, mean of {self.steps} steps of '
        f'{self.step_ms:.2f} ms; K={self.num_stages} stages, '
        f'M={self.num_micro_batches} micro-batches)',
        format_table(rows),
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
    pipeline: a `tf_mp.pipeline.Pipeline` with placed stages.
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
    TfMpError: not a pipeline, a stage is unplaced, the batch is bad, or
      `logdir` is not a directory that can be written.
  """
  check_pipeline(pipeline)
  if logdir is not None:
    # Checked before anything runs: the profiler says so only when it stops.
    logdir = check_writable_dir(check_path(logdir, 'profiler logdir'), 'profiler logdir')
  if any(d is None for d in pipeline.devices):
    raise TfMpError('device_time_report needs every stage placed on a device; '
                    f'got devices {list(pipeline.devices)}')
  positive_int('steps', steps)
  non_negative_int('warmup', warmup)
  optional_callable('loss_fn', loss_fn)
  features, labels = check_arrays(features, labels, 'device_time_report',
                                  pipeline.config.input_units, pipeline.num_classes)
  pipeline.check_batch_size(features.shape[0])
  features, labels = tf.constant(features), tf.constant(labels)

  @tf.function
  def forward_backward(x, y):
    return pipeline.loss_and_gradients(x, y, loss_fn)

  concrete = forward_backward.get_concrete_function(features, labels)
  op_devices = {op.name: op.device for op in concrete.graph.get_operations() if op.device}
  stage_patterns = [(stage_pattern(s.name), d)
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
