"""`balance_report`: each pipeline stage's parameters, FLOPs and measured time, and an even split."""

import dataclasses
import re
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_mp.checks import integer, positive_int
from tf_mp.devices import device_key, device_scope, short_device_name
from tf_mp.errors import TfMpError
from tf_mp.pipeline import Pipeline, PipelineStage, best_split, theoretical_bubble
from tf_mp.reports import profiling
from tf_mp.reports.placement import check_pipeline, stage_pattern
from tf_mp.reports.table import format_table
from tf_mp.trainer import sparse_softmax_loss


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
    lines = ['Stage balance', format_table(rows),
             f'slowest / mean stage time: {self.imbalance:.2f}']
    if self.suggested_split is not None:
      predicted = ', '.join(f'{t:.3f}' for t in self.suggested_milliseconds)
      lines.append(f'suggested split (layer widths per stage): '
                   f'{self.suggested_split}, predicted ms: {predicted}')
    return '\n'.join(lines)


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
    pipeline: a `tf_mp.pipeline.Pipeline`.
    batch_size: examples per timed batch.
    repeats: timed runs per stage (the median is reported).
    seed: seeds the random batch.

  Returns:
    A `BalanceReport`; print it for the table.

  Raises:
    TfMpError: not a pipeline, or batch_size/repeats not positive.
  """
  check_pipeline(pipeline)
  positive_int('repeats', repeats)
  integer('seed', seed)
  positive_int('batch_size', batch_size)
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
    bounds = best_split(times, parts)
    starts = [0] + bounds[:-1]
    split = tuple(tuple(layer.output_units for layer, _ in layers[a:b])
                  for a, b in zip(starts, bounds))
    predicted = [float(sum(times[a:b])) for a, b in zip(starts, bounds)]
  return BalanceReport(stages, batch_size, split, predicted)
