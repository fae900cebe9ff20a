"""Where each `on_device` part of a Keras model really runs, read from the traced train step."""

import dataclasses
import re
from typing import List, Optional

import numpy as np

from tf_mp.devices import device_key, short_device_name
from tf_mp.errors import TfMpError
from tf_mp.keras.layers import OnDevice

# tf.gradients names the gradient of op `a/b/MatMul` `gradients/a/b/MatMul_grad/...`
# (`gradients_1/...` when a graph holds several calls, a replica prefix in front).
_GRADIENT_OF = re.compile(r'(?:^|/)gradients(?:_\d+)?/(.+?)_grad/')


@dataclasses.dataclass
class KerasPartPlacement:
  """One `on_device` layer in one replica.

  Attributes:
    name: the layer's name, e.g. 'sub_model_2'.
    replica: the replica (0 without a strategy).
    requested: the device this replica asked for (the layer's device, remapped
      to the replica's group under `Model.distribute_over`).
    variable_devices: devices of its weights (mirrored: of this replica's copy).
    forward_devices: devices of the ops its call made in the traced step.
    backward_devices: devices of the gradient ops of those ops.
    forward_matmuls, backward_matmuls: `(op name, device)` of its MatMuls.
    parameters: number of scalars in its weights.
  """
  name: str
  replica: int
  requested: Optional[str]
  variable_devices: List[str]
  forward_devices: List[str]
  backward_devices: List[str]
  forward_matmuls: List[tuple]
  backward_matmuls: List[tuple]
  parameters: int

  @property
  def on_requested_device(self) -> bool:
    """True when its weights and every forward and backward op are on the requested
    device (never under a mirrored strategy: weights live on each replica's lead
    device there)."""
    want = device_key(self.requested)
    return all(d and device_key(d) == want for d in
               self.variable_devices + self.forward_devices + self.backward_devices)


@dataclasses.dataclass
class KerasPlacementReport:
  """`placement_report`'s result; `str()` gives the table."""
  parts: List[KerasPartPlacement]

  def __getitem__(self, key) -> KerasPartPlacement:
    name, replica = (key, 0) if isinstance(key, str) else key
    for part in self.parts:
      if part.name == name and part.replica == replica:
        return part
    raise KeyError(key)

  def __str__(self) -> str:
    header = ('part', 'replica', 'requested', 'variables on', 'forward ops on',
              'backward ops on', 'params')

    def devices(names):
      return ','.join(short_device_name(d, 'unplaced') for d in names) or '-'

    rows = [header] + [
        (p.name, str(p.replica), short_device_name(p.requested),
         devices(p.variable_devices), devices(p.forward_devices),
         devices(p.backward_devices), f'{p.parameters:,}') for p in self.parts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return 'Placement (traced Keras train step)\n' + '\n'.join(
        '  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _weight_device(weight, replica: int) -> str:
  """The device of the weight's copy that `replica` reads (mirrored: one per replica)."""
  variable = weight.value
  copies = getattr(variable, 'values', None)
  if copies and len(copies) > 1:
    return copies[replica % len(copies)].device
  return variable.device


def on_device_layers(model) -> list:
  """The `OnDevice` layers of `model`, nested ones included, in model order."""
  return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, OnDevice)]


def placement_report(model, x=None, y=None) -> KerasPlacementReport:
  """Reports, per `on_device` layer (and replica), where its weights and ops are.

  The ops are those of the training step Keras traced for `fit` (forward ops
  made by the layer's call, and the `tf.gradients` ops that differentiate
  them), with the devices TensorFlow recorded on them, not the requested
  strings.

  Args:
    model: a `tf_mp.keras.Model` with `on_device` layers, compiled.
    x, y: a batch to trace the step with if `fit` has not run yet (nothing is
      trained).

  Returns:
    A `KerasPlacementReport`; print it for the table.

  Raises:
    TfMpError: the model is not a `tf_mp.keras.Model`, has no `on_device`
      layer, or no step can be traced.
  """
  traced = getattr(model, 'traced_train_graph', None)
  if traced is None:
    raise TfMpError(f'placement_report: {type(model).__name__} is not a '
                    'tf_mp.keras.Model; its gradients are not placed')
  layers = on_device_layers(model)
  if not layers:
    raise TfMpError('placement_report: the model has no on_device layers')
  graph = traced(x, y)
  ops = {op.name: op for op in graph.get_operations()}
  owner = {}  # forward op name -> (layer, replica)
  for layer in layers:
    for replica, names in layer.__dict__.get('_tf_mp_traced_ops', {}).get(graph, []):
      for name in names:
        owner[name] = (layer, replica)
  backward = {}
  for op in ops.values():
    match = _GRADIENT_OF.search(op.name)
    if match and match.group(1) in owner:
      backward.setdefault(owner[match.group(1)], []).append(op)
  forward = {}
  for name, key in owner.items():
    if name in ops:
      forward.setdefault(key, []).append(ops[name])
  layout = getattr(model, 'layout', None)
  groups = layout.groups if layout is not None and layout.distributed else None
  parts = []
  for key in sorted(forward, key=lambda k: (k[1], layers.index(k[0]))):
    layer, replica = key
    requested = layer.device
    if groups and len(groups) > 1:
      mapping = dict(zip(groups[0], groups[replica % len(groups)]))
      requested = mapping.get(requested, requested)
    weights = layer.weights
    fwd, bwd = forward[key], backward.get(key, [])
    # Ops without a device (variable reads, constants) run where their inputs
    # live; like the core report, only ops that carry a device are counted,
    # except MatMuls, which are always listed so an unplaced one shows up.
    parts.append(
        KerasPartPlacement(
            name=layer.name,
            replica=replica,
            requested=requested,
            variable_devices=sorted({_weight_device(w, replica) for w in weights}),
            forward_devices=sorted({op.device for op in fwd if op.device}),
            backward_devices=sorted({op.device for op in bwd if op.device} |
                                    {op.device for op in bwd if op.type == 'MatMul'}),
            forward_matmuls=[(op.name, op.device) for op in fwd if op.type == 'MatMul'],
            backward_matmuls=[(op.name, op.device) for op in bwd if op.type == 'MatMul'],
            parameters=int(sum(np.prod(w.shape) for w in weights))))
  return KerasPlacementReport(parts)
