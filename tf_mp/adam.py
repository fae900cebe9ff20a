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

import numpy as np
import tensorflow as tf

from tf_mp.checks import finite_number
from tf_mp.devices import device_scope
from tf_mp.errors import TfMpError


def variable_name(variable: tf.Variable) -> str:
  """`'sub_model_1/hidden/kernel'` for a variable named `...kernel:0`."""
  name = variable.name
  return name[:-2] if name.endswith(':0') else name


class _SlotNames:
  """Variable -> the name of its slots; a plain object, so neither `tf.Module`
  nor a checkpoint walks it (its keys are variable references)."""

  def __init__(self):
    self.by_ref = {}


class Adam(tf.Module):
  """TF1 `AdamOptimizer` for `tf.Variable`s that may sit on different devices.

  Call `build(variables)` once (eagerly, or under a strategy's scope) before
  `apply_gradients`; `tf_mp.Trainer` does this for you.

  Slots are named after their variables. Variables that share a name (eager
  variables are not renamed: every unnamed `tf.Variable` is `Variable`) get
  their own slots all the same, named `Variable`, `Variable_1`, ... in order,
  as a TF1 graph would have named the variables.
  """

  # pylint: disable-next=protected-access
  _TF_MODULE_IGNORED_PROPERTIES = (tf.Module._TF_MODULE_IGNORED_PROPERTIES |
                                   frozenset({'_slot_names'}))

  def __init__(self,
               learning_rate: float = 0.001,
               beta1: float = 0.9,
               beta2: float = 0.999,
               epsilon: float = 1e-8,
               name: str = 'Adam'):
    super().__init__(name=name)
    for label, value in (('learning_rate', learning_rate), ('beta1', beta1),
                         ('beta2', beta2), ('epsilon', epsilon)):
      finite_number(f'Adam {label}', value, minimum=0)
    if not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
      raise TfMpError(f'Adam betas must be in [0, 1), got beta1={beta1}, beta2={beta2}')
    # The kernel computes in float32: a value that rounds to inf there, a
    # learning rate that rounds to 0 or a beta that rounds to 1 would diverge,
    # or train nothing, without a word.
    for label, value in (('learning_rate', learning_rate), ('beta1', beta1),
                         ('beta2', beta2), ('epsilon', epsilon)):
      with np.errstate(over='ignore'):
        rounded = np.float32(value)
      if (not np.isfinite(rounded) or (label.startswith('beta') and rounded >= 1) or
          (label == 'learning_rate' and rounded == 0 and value != 0)):
        raise TfMpError(f'Adam {label} {value!r} is {rounded} in float32, the precision '
                        'Adam computes in; expected a value float32 represents')
    self.learning_rate = float(learning_rate)
    self.beta1 = float(beta1)
    self.beta2 = float(beta2)
    self.epsilon = float(epsilon)
    self.m = {}  # variable name -> first-moment slot ('<name>/Adam').
    self.v = {}  # variable name -> second-moment slot ('<name>/Adam_1').
    self.beta1_power = None
    self.beta2_power = None
    self._slot_names = _SlotNames()

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
      if var.dtype.is_floating and var.dtype != tf.float32:
        raise TfMpError(f'variable {variable_name(var)!r} has dtype {var.dtype.name}; '
                        "tf_mp.Adam (TF1's AdamOptimizer) updates float32 variables")
    for var in variables:
      name = _unique(variable_name(var), self.m)
      self._slot_names.by_ref[var.ref()] = name
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
    """One Adam step: TF1's `ResourceApplyAdam` per variable, then the beta powers.

    Update math only, as Sonnet's optimizers: no cross-replica communication.
    Under a replicated strategy call it in the replica context with gradients
    already summed over the replicas (as `tf_mp.Trainer` does): each replica
    then applies the identical update to its own copy of every variable
    (`variable.handle` is the local copy there).

    Args:
      grads_and_vars: `(gradient, variable)` pairs; a None gradient is skipped.

    Returns:
      The op that updates the beta powers, after every variable's update.

    Raises:
      TfMpError: called before `build`, or for a variable `build` did not see.
    """
    if not self.built:
      raise TfMpError('Adam.apply_gradients called before Adam.build(variables)')
    updates = []
    beta1_power = tf.identity(self.beta1_power)
    beta2_power = tf.identity(self.beta2_power)
    for grad, var in grads_and_vars:
      if grad is None:
        continue
      name = self._slot_names.by_ref.get(var.ref(), variable_name(var))
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
      tf.raw_ops.AssignVariableOp(resource=self.beta1_power.handle,
                                  value=beta1_power * self.beta1)
      return tf.raw_ops.AssignVariableOp(resource=self.beta2_power.handle,
                                         value=beta2_power * self.beta2)


def _unique(name: str, taken) -> str:
  """`name`, or `name_1`, `name_2`, ... : the first not in `taken`."""
  unique, count = name, 0
  while unique in taken:
    count += 1
    unique = f'{name}_{count}'
  return unique
