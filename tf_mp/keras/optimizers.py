"""`tf_mp.keras.Adam`: Keras's Adam, each variable's update one fused op on its device."""

import keras
import tensorflow as tf

_PACKAGE = 'tf_mp'


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Adam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` whose update is TensorFlow's `ResourceApplyAdam`.

  Same arguments, state (`iterations`, one `momentum` and one `velocity` per
  variable, with Keras's names), config and serialization as
  `keras.optimizers.Adam`; a `.keras` file saved with it loads with it. Only
  the update differs in form: Keras runs about 25 small ops per variable
  (powers, casts, two `assign_add`, an `assign_sub`), where this runs the
  one-kernel update `ResourceApplyAdam` (TF1's `AdamOptimizer` op) on the
  variable's device, with Keras's bias corrections `beta^t` (t = iterations
  + 1) as its `beta1_power`/`beta2_power`. The kernel computes Keras's
  formula: `m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
  `var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)`.

  The scalars all updates share are computed once per step: in the
  document's model the traced train step has 243 ops against 722 with
  `keras.optimizers.Adam`. `amsgrad=True` and sparse gradients
  (`tf.IndexedSlices`) take Keras's own update. Weight decay, clipping, EMA
  and gradient accumulation are Keras's (they act around `update_step`).
  """

  # dtype -> the scalars of the update being applied (see `apply`).
  _tf_mp_scalars = None

  def apply(self, grads, trainable_variables=None):
    # The scalars every weight's update shares (bias corrections, lr, betas,
    # epsilon) are made once per apply, by its first `update_step`, and
    # forgotten after it: they belong to this apply's graph and step. Under a
    # MirroredStrategy the updates run once, in the merge of all replicas'
    # applies, which all start before it and end after it.
    # Outside Keras's attribute tracking: tensors of one trace, not state.
    self.__dict__['_tf_mp_scalars'] = {}
    try:
      return super().apply(grads, trainable_variables)
    finally:
      self.__dict__['_tf_mp_scalars'] = None

  def _scalars(self, dtype, learning_rate):
    """`(beta_1, beta_2, beta_1^t, beta_2^t, lr, epsilon)` as `dtype`, t = iterations + 1."""
    shared = self._tf_mp_scalars  # None: update_step called outside apply
    if shared is not None and dtype in shared:
      return shared[dtype]
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    scalars = (beta_1, beta_2, tf.pow(beta_1, local_step), tf.pow(beta_2, local_step),
               tf.cast(learning_rate, dtype), tf.cast(self.epsilon, dtype))
    if shared is not None:
      shared[dtype] = scalars
    return scalars

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    var = variable.value if isinstance(variable, keras.Variable) else variable
    index = self._get_variable_index(variable)
    handles = (var.handle, self._momentums[index].value.handle,
               self._velocities[index].value.handle)
    if len({h.device for h in handles}) != 1 or not handles[0].device:
      # One kernel needs the variable and its slots on one device (slots
      # built elsewhere, e.g. traced in a plain keras.Model): Keras's ops.
      return super().update_step(gradient, variable, learning_rate)
    beta_1, beta_2, beta_1_power, beta_2_power, lr, epsilon = self._scalars(
        var.dtype, learning_rate)
    with tf.device(handles[0].device):  # the kernel runs beside the variable
      return tf.raw_ops.ResourceApplyAdam(
          var=handles[0], m=handles[1], v=handles[2], beta1_power=beta_1_power,
          beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2,
          epsilon=epsilon, grad=tf.cast(gradient, var.dtype), use_locking=False)
