"""Adam with the exact semantics of the document's `tf.train.AdamOptimizer`.

Why not `tf.keras.optimizers.Adam`: the document's optimizer is TF1's, and the
port must compute what it computes. This module runs TF1's own kernel
(`ResourceApplyAdam`, the op behind `AdamOptimizer.minimize`), keeps the bias
corrections as the running products `beta1_power` and `beta2_power` as TF1
does, and defaults to TF1's epsilon 1e-8 (Keras uses 1e-7). Each slot is created
on its variable's device, so the optimizer state of a sub-model lives beside
the sub-model, and slots carry TF1's names (`<var>/Adam`, `<var>/Adam_1`,
`beta1_power`, `beta2_power`) so a TF1 checkpoint's optimizer state maps by name.

Update, for step t = 1, 2, ... (beta1_power = beta1^t, beta2_power = beta2^t):
  lr_t = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
  m <- beta1 * m + (1 - beta1) * g
  v <- beta2 * v + (1 - beta2) * g^2
  var <- var - lr_t * m / (sqrt(v) + epsilon)
"""

from typing import Iterable, Sequence, Tuple

import tensorflow as tf

from tf_mp.devices import device_scope
from tf_mp.errors import TfMpError


def variable_name(variable: tf.Variable) -> str:
  """`'sub_model_1/hidden/kernel'` for a variable named `...kernel:0`."""
  name = variable.name
  return name[:-2] if name.endswith(':0') else name


def _copy_to(tensor: tf.Tensor, device: str) -> tf.Tensor:
  with tf.device(device):
    return tf.identity(tensor)


class Adam(tf.Module):
  """TF1 `AdamOptimizer` for `tf.Variable`s that may sit on different devices.

  Call `build(variables)` once (eagerly, or under a strategy's scope) before
  `apply_gradients`; `tf_mp.Trainer` does this for you.
  """

  def __init__(self,
               learning_rate: float = 0.001,
               beta1: float = 0.9,
               beta2: float = 0.999,
               epsilon: float = 1e-8,
               name: str = 'Adam'):
    super().__init__(name=name)
    for label, value in (('learning_rate', learning_rate), ('beta1', beta1),
                         ('beta2', beta2), ('epsilon', epsilon)):
      if not isinstance(value, (int, float)) or not value >= 0 or value == float('inf'):
        raise TfMpError(f'Adam {label} must be a finite number >= 0, got {value!r}')
    if not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
      raise TfMpError(f'Adam betas must be in [0, 1), got beta1={beta1}, beta2={beta2}')
    self.learning_rate = float(learning_rate)
    self.beta1 = float(beta1)
    self.beta2 = float(beta2)
    self.epsilon = float(epsilon)
    self.m = {}  # variable name -> first-moment slot ('<name>/Adam').
    self.v = {}  # variable name -> second-moment slot ('<name>/Adam_1').
    self.beta1_power = None
    self.beta2_power = None

  @property
  def built(self) -> bool:
    return self.beta1_power is not None

  def build(self, variables: Sequence[tf.Variable]) -> None:
    """Creates the slots, each on its variable's device, and the beta powers.

    The beta powers sit with the variable whose name sorts first, as in TF1.
    """
    if self.built:
      return
    if not variables:
      raise TfMpError('Adam.build got no variables to optimise')
    for var in variables:
      name = variable_name(var)
      with tf.init_scope(), device_scope(var.device):
        self.m[name] = tf.Variable(tf.zeros(var.shape, var.dtype),
                                   trainable=False, name=name + '/Adam')
        self.v[name] = tf.Variable(tf.zeros(var.shape, var.dtype),
                                   trainable=False, name=name + '/Adam_1')
    first = min(variables, key=variable_name)
    with tf.init_scope(), device_scope(first.device):
      self.beta1_power = tf.Variable(self.beta1, trainable=False,
                                     name='beta1_power', dtype=tf.float32)
      self.beta2_power = tf.Variable(self.beta2, trainable=False,
                                     name='beta2_power', dtype=tf.float32)

  def slots(self) -> dict:
    """TF1 names -> optimizer variables (slots and beta powers)."""
    named = {'beta1_power': self.beta1_power, 'beta2_power': self.beta2_power}
    for name in self.m:
      named[name + '/Adam'] = self.m[name]
      named[name + '/Adam_1'] = self.v[name]
    return named

  def apply_gradients(
      self, grads_and_vars: Iterable[Tuple[tf.Tensor, tf.Variable]]) -> tf.Operation:
    """One Adam step: TF1's `ResourceApplyAdam` per variable, then the beta powers."""
    if not self.built:
      raise TfMpError('Adam.apply_gradients called before Adam.build(variables)')
    if tf.distribute.has_strategy():
      grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
      if tf.distribute.in_cross_replica_context():
        return self._distributed_apply(tf.distribute.get_strategy(), grads_and_vars)
      # Each gradient sits on its sub-model's device; moved beside its variable
      # (the replica's lead device) they all-reduce as one packed collective.
      grads_and_vars = [(_copy_to(g, v.device), v) for g, v in grads_and_vars]
      return tf.distribute.get_replica_context().merge_call(
          self._distributed_apply, args=(grads_and_vars,))
    updates = []
    beta1_power = tf.identity(self.beta1_power)
    beta2_power = tf.identity(self.beta2_power)
    for grad, var in grads_and_vars:
      if grad is None:
        continue
      name = variable_name(var)
      if name not in self.m:
        raise TfMpError(f'Adam has no slots for variable {name!r}; build it with '
                        'the variables it will update')
      with device_scope(var.device):
        updates.append(
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=self.m[name].handle, v=self.v[name].handle,
                beta1_power=beta1_power, beta2_power=beta2_power,
                lr=tf.constant(self.learning_rate, var.dtype),
                beta1=tf.constant(self.beta1, var.dtype),
                beta2=tf.constant(self.beta2, var.dtype),
                epsilon=tf.constant(self.epsilon, var.dtype), grad=grad,
                use_locking=False))
    with tf.control_dependencies(updates), device_scope(self.beta1_power.device):
      self.beta1_power.assign(beta1_power * self.beta1)
      return self.beta2_power.assign(beta2_power * self.beta2).op

  def _distributed_apply(self, strategy, grads_and_vars) -> tf.Operation:
    """Cross-replica step: sums the replicas' gradients, then the same TF1 update.

    Each replica's gradient is of its share of the global-batch loss, so their
    sum is the gradient of the global-batch loss. Every copy of a mirrored
    variable gets the identical `ResourceApplyAdam` on its own device.
    """
    for _, var in grads_and_vars:
      if variable_name(var) not in self.m:
        raise TfMpError(f'Adam has no slots for variable {variable_name(var)!r}; '
                        'build it with the variables it will update')
    reduced = strategy.extended.batch_reduce_to(
        tf.distribute.ReduceOp.SUM, grads_and_vars)
    beta1, beta2 = self.beta1, self.beta2

    def apply_one(var, grad, m, v, beta1_power, beta2_power):
      return tf.raw_ops.ResourceApplyAdam(
          var=var.handle, m=m.handle, v=v.handle,
          beta1_power=beta1_power.read_value(),
          beta2_power=beta2_power.read_value(),
          lr=tf.constant(self.learning_rate, var.dtype),
          beta1=tf.constant(beta1, var.dtype), beta2=tf.constant(beta2, var.dtype),
          epsilon=tf.constant(self.epsilon, var.dtype), grad=grad, use_locking=False)

    updates = []
    for grad, (_, var) in zip(reduced, grads_and_vars):
      name = variable_name(var)
      updates.append(strategy.extended.update(
          var, apply_one, args=(grad, self.m[name], self.v[name],
                                self.beta1_power, self.beta2_power)))
    with tf.control_dependencies(updates):
      strategy.extended.update(self.beta1_power, lambda p: p.assign(p * beta1))
      return strategy.extended.update(
          self.beta2_power, lambda p: p.assign(p * beta2).op)
