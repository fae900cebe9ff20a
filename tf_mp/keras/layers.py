"""Keras layers that live on a device: `on_device`, and the document's sub-models."""

import weakref
from typing import Optional

import keras
import tensorflow as tf

from tf_mp.devices import device_scope, resolve_devices
from tf_mp.errors import TfMpError
from tf_mp.initializers import glorot_uniform

_PACKAGE = 'tf_mp'


def _check_units(where: str, **widths) -> None:
  for label, value in widths.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise TfMpError(f'{where}: {label} must be a positive integer, got {value!r}')


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NameSeededGlorotUniform(keras.initializers.Initializer):
  """Glorot-uniform values determined by `(seed, name)`, as `tf_mp.Dense` draws them.

  With `name` the variable's tf_mp name (e.g. `'sub_model_1/hidden/kernel'`),
  a Keras kernel starts with exactly the values of the same kernel of
  `tf_mp.build_model` (same seed), whatever order the layers are built in.
  """

  def __init__(self, seed: int, name: str):
    self.seed = int(seed)
    self.name = str(name)

  def __call__(self, shape, dtype=None):
    values = glorot_uniform(list(shape), self.seed, self.name)
    return tf.cast(values, dtype) if dtype is not None else values

  def get_config(self):
    return {'seed': self.seed, 'name': self.name}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OnDevice(keras.layers.Wrapper):
  """Runs a Keras layer on one device: its weights are created there, its calls run there.

  Wraps any `keras.layers.Layer` (a `Dense`, a `Sequential`, a layer of your
  own). The wrapper takes the inner layer's name and adds no name scope of its
  own, so the weights keep the paths they would have unwrapped (e.g.
  `sub_model_1/hidden/kernel`). Shapes: whatever the inner layer maps.

  Devices: the inner layer's weights are created under `tf.device(device)`
  and every call (`fit`, `evaluate`, `predict`, eager) runs under it. The
  backward pass follows only when gradients are taken with `tf.gradients`, as
  `tf_mp.keras.Model` does; a plain `keras.Model` takes them with a
  `GradientTape` and leaves them unplaced. Under a `tf.distribute` strategy the
  weights are mirrored (one copy per replica, on the replica's lead device:
  TensorFlow's rule) and the calls run on the replica's own group (see
  `tf_mp.devices.remapped_devices`).

  Attributes:
    layer: the wrapped layer.
    device: the canonical device name (e.g. `/device:CPU:1`).
  """

  def __init__(self, layer, device: str, **kwargs):
    if not isinstance(layer, keras.layers.Layer):
      raise TfMpError(f'on_device: {layer!r} is not a Keras layer; expected a '
                      'keras.layers.Layer such as keras.layers.Dense(64)')
    if isinstance(layer, OnDevice):
      # The inner device would win, silently: the outer one would be a lie.
      raise TfMpError(f'on_device: {layer.name!r} is already placed on {layer.device}; '
                      'expected a layer that is not wrapped by on_device')
    if device is None:
      raise TfMpError('on_device: device is None; expected a device name such '
                      'as "cpu:1" or "/GPU:0"')
    self.device = resolve_devices([device], 1)[0]
    kwargs.setdefault('name', layer.name)
    super().__init__(layer, **kwargs)

  def build(self, input_shape=None):
    if not self.layer.built:
      # The inner layer's path is taken from the wrapper's parent, so its
      # weights read `sub_model_1/hidden/kernel`, not `sub_model_1/sub_model_1/...`.
      if getattr(self.layer, '_parent_path', None) is None:
        self.layer._parent_path = self._parent_path or ''  # pylint: disable=protected-access
      with device_scope(self.device):
        self.layer.build(input_shape)
      # Built symbolically (a subclassed model built by fit), Keras defers
      # creating the TF variables until later, outside this scope: make that
      # creation happen on the device too.
      for weight in self.layer.weights:
        if getattr(weight, '_value', True) is None and hasattr(
            weight, '_initialize_with_initializer'):
          weight._initialize_with_initializer = _placed(  # pylint: disable=protected-access
              weight._initialize_with_initializer, self.device)  # pylint: disable=protected-access

  def call(self, inputs, *args, **kwargs):
    if tf.executing_eagerly() or not tf.inside_function():
      with device_scope(self.device):
        return self.layer(inputs, *args, **kwargs)
    # Tracing: remember which ops this call made, so that placement_report can
    # find this layer's forward ops (and, through their names, the gradients).
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    with device_scope(self.device):
      outputs = self.layer(inputs, *args, **kwargs)
    context = tf.distribute.get_replica_context()
    replica = tf.get_static_value(context.replica_id_in_sync_group) if context else 0
    made = [op.name for op in graph.get_operations()[before:]]
    traced = self.__dict__.setdefault('_tf_mp_traced_ops', weakref.WeakKeyDictionary())
    traced.setdefault(graph, []).append((int(replica or 0), made))
    return outputs

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def compute_output_spec(self, *args, **kwargs):
    return self.layer.compute_output_spec(*args, **kwargs)

  def get_config(self):
    return {**super().get_config(), 'device': self.device}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    # Loading builds the inner layer while deserializing it (its build
    # config), before __init__ runs: do that on the device too.
    device = resolve_devices([config['device']], 1)[0]
    with device_scope(device):
      return super().from_config(dict(config), custom_objects)


def _placed(initialize, device: str):
  def initialize_on_device(initializer):
    with device_scope(device):
      return initialize(initializer)
  return initialize_on_device


def on_device(layer, device: str) -> OnDevice:
  """Wraps `layer` so that its weights and its computation live on `device`.

  Args:
    layer: any `keras.layers.Layer`.
    device: `'cpu:1'`, `'/GPU:0'`, `'/device:CPU:2'`, ... (the spellings of
      `tf_mp.canonical_device`).

  Returns:
    An `OnDevice` layer, used like the layer itself; it survives
    `model.save('x.keras')` / `keras.models.load_model` without
    `custom_objects`, device included.

  Raises:
    TfMpError: `layer` is not a Keras layer, or `device` is malformed or does
      not exist here (the message lists the devices that do).
  """
  return OnDevice(layer, device)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SubModel(keras.layers.Layer):
  """The document's sub-model: `hidden` (dense + ReLU) then `output` (dense).

  Shapes: `[batch, input_units]` float32 -> `[batch, output_units]` float32.
  Weights: `<name>/hidden/kernel`, `<name>/hidden/bias`, `<name>/output/kernel`,
  `<name>/output/bias`, the names of `tf_mp.SubModel`. With `seed` set, the
  kernels start with `tf_mp.build_model`'s values for that seed (biases zero);
  with `seed=None` Keras's own Glorot-uniform draws them.
  Devices: none of its own; wrap it with `on_device` (the `sub_model_k`
  builders do).
  """

  def __init__(self, hidden_units: int = 256, output_units: int = 64,
               seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    _check_units(self.name, hidden_units=hidden_units, output_units=output_units)
    self.hidden_units = hidden_units
    self.output_units = output_units
    self.seed = seed

    def kernel_init(part):
      if seed is None:
        return 'glorot_uniform'
      return NameSeededGlorotUniform(seed, f'{self.name}/{part}/kernel')

    self.hidden = keras.layers.Dense(hidden_units, activation='relu',
                                     kernel_initializer=kernel_init('hidden'),
                                     name='hidden')
    self.output_layer = keras.layers.Dense(output_units,
                                           kernel_initializer=kernel_init('output'),
                                           name='output')

  def build(self, input_shape):
    shape = tuple(input_shape)
    if len(shape) != 2 or shape[-1] is None:
      raise TfMpError(f'{self.name}: inputs have shape {list(shape)}; expected '
                      '[batch, features] with a known number of features')
    self.hidden.build(shape)
    self.output_layer.build((shape[0], self.hidden_units))

  def call(self, inputs):
    return self.output_layer(self.hidden(inputs))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.output_units)

  def get_config(self):
    return {**super().get_config(), 'hidden_units': self.hidden_units,
            'output_units': self.output_units, 'seed': self.seed}


def _builder(k: int):

  def build(device: Optional[str] = None,
            *,
            hidden_units: int = 256,
            output_units: int = 64,
            seed: Optional[int] = None):
    layer = SubModel(hidden_units, output_units, seed, name=f'sub_model_{k}')
    return on_device(layer, device) if device is not None else layer

  build.__name__ = build.__qualname__ = f'sub_model_{k}'
  build.__doc__ = (
      f'Builds the document\'s `sub_model_{k}` as a Keras layer.\n\n  Args:\n'
      '    device: where its weights and computation live, e.g. "cpu:1" or '
      '"/GPU:0"; None leaves placement to TensorFlow.\n    hidden_units, '
      'output_units: widths (defaults 256 and 64; the input width comes from '
      'the first call).\n    seed: None for Keras\'s initial values, or the '
      'seed of `tf_mp.build_model` whose kernels to start from.\n\n  Returns:\n'
      f'    A `SubModel` named `sub_model_{k}`, wrapped in `on_device` when '
      'device is given; `[batch, n] -> [batch, output_units]`.\n\n  Raises:\n'
      '    TfMpError: a width is not a positive integer, or the device does not '
      'exist.\n  ')
  return build


sub_model_1 = _builder(1)
sub_model_2 = _builder(2)
sub_model_3 = _builder(3)
