"""The document's `model(inputs)`: three sub-models on their devices, concat, head."""

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from tf_mp.dense import Dense
from tf_mp.devices import device_scope
from tf_mp.devices import DeviceSpec, resolve_devices
from tf_mp.checks import instance_of, integer, positive_int
from tf_mp.errors import TfMpError
from tf_mp.memory import check_parameters_fit
from tf_mp.ops import concat as concat_ops
from tf_mp.sub_models import SubModel, check_features


@dataclasses.dataclass(frozen=True)
class SubModelConfig:
  """Widths of one sub-model: `input_units -> hidden_units -> output_units`."""
  hidden_units: int = 256
  output_units: int = 64

  def __post_init__(self):
    positive_int('SubModelConfig.hidden_units', self.hidden_units)
    positive_int('SubModelConfig.output_units', self.output_units)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The configuration that fills the document's `...` (see the README's table).

  Attributes:
    input_units: width of the shared input, 128 in the document.
    sub_models: one `SubModelConfig` per sub-model; three by default, widths may
      differ (uneven splits).
    num_classes: logits of the head (labels are integers in [0, num_classes)).
    seed: seeds the Glorot-uniform kernels (biases start at zero).
    concat: how the sub-model outputs are joined: 'tf' (`tf.concat`),
      'custom' (the TfMpConcat op of `tf_mp/ops`, which must be built:
      `python -m tf_mp.ops.build`), or 'auto' (`tf_mp.ops.fused_concat`: the op
      when it is usable, else `tf.concat` after one warning;
      `TF_MP_CUSTOM_OPS` decides). All three
      give bit-for-bit the same outputs and gradients.
  """
  input_units: int = 128
  sub_models: Tuple[SubModelConfig, ...] = (SubModelConfig(),) * 3
  num_classes: int = 10
  seed: int = 0
  concat: str = 'tf'

  def __post_init__(self):
    """Checks every field at creation: one TfMpError line naming it."""
    positive_int('ModelConfig.input_units', self.input_units)
    positive_int('ModelConfig.num_classes', self.num_classes)
    integer('ModelConfig.seed', self.seed)
    subs = self.sub_models
    if not isinstance(subs, (tuple, list)) or not all(
        isinstance(s, SubModelConfig) for s in subs):
      raise TfMpError(f'ModelConfig.sub_models must be a sequence of '
                      f'SubModelConfig, got {subs!r}')
    if not subs:
      raise TfMpError('config.sub_models is empty; expected at least one sub-model')
    object.__setattr__(self, 'sub_models', tuple(subs))  # frozen: hashable
    if self.concat not in concat_ops.PATHS:
      raise TfMpError(f'concat {self.concat!r} is not one of "auto", "custom", '
                      '"tf"')
    # Widths far beyond the machine fail here, not in TensorFlow's initializer.
    check_parameters_fit(self.parameter_count, 'ModelConfig')

  @property
  def parameter_count(self) -> int:
    """Kernels and biases of the sub-models and the head."""
    subs = sum((self.input_units + 1) * s.hidden_units +
               (s.hidden_units + 1) * s.output_units for s in self.sub_models)
    return subs + (self.concat_units + 1) * self.num_classes

  @property
  def concat_units(self) -> int:
    return sum(s.output_units for s in self.sub_models)


class ConcatModel(tf.Module):
  """`head(concat([sub_model_1(x), sub_model_2(x), sub_model_3(x)], -1))`.

  Shapes: `[batch, 128]` float32 -> logits `[batch, 10]` float32 (default
  config; `[batch, config.input_units]` -> `[batch, config.num_classes]`).
  Devices: sub-model k on `devices[k]`; the concat, the head and the loss on
  `output_device` (default: the first sub-model's device).
  Variable names: `sub_model_k/{hidden,output}/{kernel,bias}`, `head/kernel`,
  `head/bias` (no prefix of the model's own).
  """

  def __init__(self,
               sub_models: Sequence[SubModel],
               head: Dense,
               output_device: Optional[str],
               config: ModelConfig,
               name: str = 'concat_model'):
    super().__init__(name=name)
    self.sub_models = list(sub_models)
    self.head = head
    self.output_device = output_device
    self.config = config

  @property
  def input_spec(self) -> tf.TensorSpec:
    """One batch of features: float32 `[None, config.input_units]`."""
    return tf.TensorSpec([None, self.config.input_units], tf.float32)

  @property
  def num_classes(self) -> int:
    return self.config.num_classes

  @property
  def devices(self) -> list:
    """The device of each sub-model, in order."""
    return [m.device for m in self.sub_models]

  def concat(self, outputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """Joins the sub-model outputs on the last axis (`config.concat` path)."""
    return concat_ops.concat_last_axis(list(outputs), self.config.concat)

  def __call__(self, inputs) -> tf.Tensor:
    check_features(inputs, self.config.input_units, 'model')
    outputs = [sub_model(inputs) for sub_model in self.sub_models]
    with device_scope(self.output_device), tf.name_scope('concat'):
      joined = self.concat(outputs)
    return self.head(joined)


def build_model(devices: DeviceSpec = None,
                config: Optional[ModelConfig] = None,
                *,
                output_device: Optional[str] = None,
                concat: Optional[str] = None) -> ConcatModel:
  """Builds the document's model with each sub-model on its own device.

  Args:
    devices: one device per sub-model (`['cpu:0', 'cpu:1', 'cpu:2']`,
      `'gpu:0,gpu:1,gpu:2'`, fewer used round-robin), `'auto'`, or None for no
      placement. See `tf_mp.resolve_devices`.
    config: a `ModelConfig`; the README's defaults when None.
    output_device: where the concat and the head run; default the first
      sub-model's device.
    concat: 'auto', 'custom' or 'tf', overriding `config.concat` (see
      `ModelConfig`).

  Returns:
    A `ConcatModel` mapping `[batch, 128]` float32 to logits `[batch, 10]`.

  Raises:
    TfMpError: a device does not exist, the config is invalid, or concat is
      'custom' and the custom op is not usable.
  """
  config = instance_of('config', ModelConfig() if config is None else config,
                       ModelConfig, 'a tf_mp.ModelConfig')
  if concat is not None:
    config = dataclasses.replace(config, concat=concat)
  if config.concat == 'custom':
    concat_ops.require_custom_concat()  # fail now, not in the first step
  placed = resolve_devices(devices, len(config.sub_models), 'sub-models')
  sub_models = [
      SubModel(placed[k], input_units=config.input_units,
               hidden_units=sub.hidden_units, output_units=sub.output_units,
               seed=config.seed, name=f'sub_model_{k + 1}')
      for k, sub in enumerate(config.sub_models)
  ]
  if output_device is not None:
    output_device = resolve_devices([output_device], 1)[0]
  else:
    output_device = placed[0]
  head = Dense(config.concat_units, config.num_classes, device=output_device,
               seed=config.seed, name='head')
  return ConcatModel(sub_models, head, output_device, config)
