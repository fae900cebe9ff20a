"""Where each part of a model really lives: read from TensorFlow, not from requests."""

import dataclasses
import re
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_mp.checks import trainer_of
from tf_mp.devices import device_key, short_device_name
from tf_mp.errors import TfMpError
from tf_mp.pipeline import Pipeline
from tf_mp.reports.table import format_table
from tf_mp.trainer import Trainer


@dataclasses.dataclass
class PartPlacement:
  """One part (a sub-model or the head) of a model.

  Attributes:
    name: the part's name scope, e.g. 'sub_model_2' or 'head'.
    requested: the device the part was built for (None: not placed).
    variable_devices: the devices of its variables (`variable.device`).
    op_devices: the devices of its forward and gradient ops in the traced
      training step (ops without a device, such as variable reads, which run
      where their variable lives, are not counted).
    parameters: number of scalars in its variables.
    bytes: their size in bytes.
  """
  name: str
  requested: Optional[str]
  variable_devices: List[str]
  op_devices: List[str]
  parameters: int
  bytes: int

  @property
  def on_requested_device(self) -> bool:
    """True when the variables and the ops are all on the requested device."""
    if self.requested is None:
      return True
    want = device_key(self.requested)
    return all(device_key(d) == want
               for d in self.variable_devices + self.op_devices)


@dataclasses.dataclass
class PlacementReport:
  """`placement_report`'s result; `str()` gives the printed table.

  Attributes:
    parts: one `PartPlacement` per sub-model and the head.
    concat_op: the op type that joined the sub-model outputs in the traced
      step: 'TfMpConcat' (the custom op of `tf_mp/ops`) or 'ConcatV2'
      (`tf.concat`); None when no concat was found.
    concat_devices: the devices of that op.
  """
  parts: List[PartPlacement]
  concat_op: Optional[str] = None
  concat_devices: List[str] = dataclasses.field(default_factory=list)

  def __getitem__(self, name: str) -> PartPlacement:
    for part in self.parts:
      if part.name == name:
        return part
    raise KeyError(name)

  def __str__(self) -> str:
    header = ('part', 'requested', 'variables on', 'ops on', 'params', 'bytes')
    rows = [header] + [
        (p.name, short_device_name(p.requested), ','.join(map(short_device_name, p.variable_devices)),
         ','.join(map(short_device_name, p.op_devices)) or '-', f'{p.parameters:,}',
         f'{p.bytes:,}') for p in self.parts
    ]
    lines = [format_table(rows)]
    if self.concat_op:
      kind = _CONCAT_KINDS.get(self.concat_op, self.concat_op)
      on = ','.join(map(short_device_name, self.concat_devices)) or '-'
      lines.append(f'concat: {self.concat_op} ({kind}) on {on}')
    return 'Placement\n' + '\n'.join(lines)


_CONCAT_KINDS = {'TfMpConcat': 'custom op', 'ConcatV2': 'tf.concat'}


def part_placement(name: str, requested: Optional[str],
                   variables: Sequence[tf.Variable], ops) -> PartPlacement:
  """A `PartPlacement` from a part's variables and its ops in a traced graph."""
  return PartPlacement(
      name=name,
      requested=requested,
      variable_devices=sorted({v.device for v in variables}),
      op_devices=sorted({op.device for op in ops if op.device}),
      parameters=int(sum(np.prod(v.shape) for v in variables)),
      bytes=int(sum(np.prod(v.shape) * v.dtype.size for v in variables)))


def model_parts(model: tf.Module) -> list:
  """`(name, module)` for each top-level part of `model` that has variables.

  The parts are the modules held directly by the model's attributes (or in a
  list or tuple there), in attribute order, named by their name scope. A model
  without sub-modules is one part.
  """
  parts, seen = [], set()
  for value in vars(model).values():
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
      if (isinstance(item, tf.Module) and id(item) not in seen and
          item.trainable_variables):
        seen.add(id(item))
        parts.append(item)
  if not parts:
    return [(_scope_name(model), model)]
  return [(_scope_name(part), part) for part in parts]


def _scope_name(module: tf.Module) -> str:
  return module.name_scope.name.rstrip('/') or module.name


def placement_report(model, trainer: Optional[Trainer] = None) -> PlacementReport:
  """Reports, for each top-level part of `model`, where its variables and ops are.

  Works for any module tree: the document's model (its sub-models and head),
  a pipeline's stages, or your own `tf.Module`. Devices are read from
  TensorFlow: `variable.device`, and the ops of the traced training step (the
  forward ops and, as `tf.gradients` colocates them, the backward ops) whose
  names lie in the part's name scope. Give parts distinct names: two parts
  with one name share one row's ops.

  Args:
    model: a `tf_mp.TrainableModel`.
    trainer: the `Trainer` whose traced training step is inspected; a fresh
      one (which changes nothing in `model`) when None.

  Returns:
    A `PlacementReport`; print it for the table. A part's `requested` device is
    its `device` attribute, when it has one.

  Raises:
    TfMpError: the features of a model without `input_spec` are not known yet
      (train a step first, or give the `Trainer` an `input_spec`).
  """
  if isinstance(model, Pipeline):
    return pipeline_placement(model, trainer)
  graph = trainer_for(model, trainer).traced_step_graph()
  operations = graph.get_operations()
  parts = []
  for scope, part in model_parts(model):
    ops = [op for op in operations
           if op.name.startswith(scope + '/') or f'/{scope}/' in op.name]
    parts.append(part_placement(scope, getattr(part, 'device', None),
                                part.trainable_variables, ops))
  # The document's model joins its sub-model outputs under the scope 'concat'.
  concats = [op for op in operations
             if op.type in _CONCAT_KINDS and 'concat/' in op.name]
  concat_op = None
  if concats:
    concat_op = ('TfMpConcat' if any(op.type == 'TfMpConcat' for op in concats)
                 else 'ConcatV2')
  return PlacementReport(
      parts, concat_op,
      sorted({op.device for op in concats if op.type == concat_op}))


def trainer_for(model, trainer: Optional[Trainer]) -> Trainer:
  """`trainer`, checked to be a `Trainer` of `model`, or a fresh `Trainer(model)`."""
  return Trainer(model) if trainer is None else trainer_of(trainer, model)


def check_pipeline(pipeline) -> None:
  """Raises TfMpError unless `pipeline` is a `tf_mp.pipeline.Pipeline`."""
  if not isinstance(pipeline, Pipeline):
    raise TfMpError(f'expected a tf_mp.pipeline.Pipeline, got a {type(pipeline).__name__}')


def stage_pattern(name: str) -> re.Pattern:
  """Matches the ops of a stage called `name`, in any micro-batch's scope."""
  # A module's ops are in scope `name/`, or `name_1/` ... when it is called
  # again (one call per micro-batch), also inside `gradients/...` scopes.
  return re.compile(rf'(^|/){re.escape(name)}(_\d+)?/')


def pipeline_placement(pipeline: Pipeline,
                       trainer: Optional[Trainer] = None) -> PlacementReport:
  """Each stage's variable devices and op devices in the traced training step.

  Args:
    pipeline: a `tf_mp.pipeline.Pipeline` whose stages have distinct names.
    trainer: the `Trainer` whose step is inspected; a fresh one when None
      (which changes nothing in the pipeline).

  Returns:
    A `PlacementReport` with one part per stage.
  """
  check_pipeline(pipeline)
  operations = trainer_for(pipeline, trainer).traced_step_graph().get_operations()
  parts = []
  for stage, device in zip(pipeline.stages, pipeline.devices):
    pattern = stage_pattern(stage.name)
    ops = [op for op in operations if pattern.search(op.name)]
    parts.append(part_placement(stage.name, device, stage.trainable_variables, ops))
  return PlacementReport(parts)
