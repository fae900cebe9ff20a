"""Where each part of a model really lives: read from TensorFlow, not from requests."""

import dataclasses
from typing import List, Optional

import numpy as np

from tf_mp.devices import device_key, short_device_name
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in rows]
    if self.concat_op:
      kind = _CONCAT_KINDS.get(self.concat_op, self.concat_op)
      on = ','.join(map(short_device_name, self.concat_devices)) or '-'
      lines.append(f'concat: {self.concat_op} ({kind}) on {on}')
    return 'Placement\n' + '\n'.join(lines)


_CONCAT_KINDS = {'TfMpConcat': 'custom op', 'ConcatV2': 'tf.concat'}


def _parts(model) -> list:
  return list(model.sub_models) + [model.head]


def placement_report(model, trainer: Optional[Trainer] = None) -> PlacementReport:
  """Reports, per sub-model and the head, where its variables and ops are.

  Args:
    model: a model from `build_model`.
    trainer: the `Trainer` whose traced training step is inspected; a fresh
      one (which changes nothing in `model`) when None.

  Returns:
    A `PlacementReport`; print it for the table.
  """
  graph = (trainer or Trainer(model)).traced_step_graph()
  parts = []
  for part in _parts(model):
    scope = part.name
    ops = [op for op in graph.get_operations()
           if op.device and (op.name.startswith(scope + '/') or
                             f'/{scope}/' in op.name)]
    variables = part.trainable_variables
    parts.append(
        PartPlacement(
            name=scope,
            requested=part.device,
            variable_devices=sorted({v.device for v in variables}),
            op_devices=sorted({op.device for op in ops}),
            parameters=int(sum(np.prod(v.shape) for v in variables)),
            bytes=int(sum(np.prod(v.shape) * v.dtype.size for v in variables))))
  # The model joins its sub-model outputs under the name scope 'concat'.
  concats = [op for op in graph.get_operations()
             if op.type in _CONCAT_KINDS and 'concat/' in op.name]
  concat_op = None
  if concats:
    concat_op = ('TfMpConcat' if any(op.type == 'TfMpConcat' for op in concats)
                 else 'ConcatV2')
  return PlacementReport(
      parts, concat_op,
      sorted({op.device for op in concats if op.type == concat_op}))
