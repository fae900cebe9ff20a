"""Tests that `Trainer`, `placement_report` and the strategies take any model.

A user's own `tf.Module` (no `config`, no `sub_models`), the tiny LM and the
pipeline, each checked against an independent reference: numpy, an unplaced
`GradientTape` step, or the same model on one device group.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import assert_weights_match, device_index, draw_seed

MIRRORED_GROUPS = 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'


class TwoTowers(tf.Module):
  """The README's model: two of the document's sub-models on two devices, summed."""

  def __init__(self, num_classes: int = 5, seed: int = 0):
    super().__init__()
    self.left = tf_mp.sub_model_1('cpu:1', output_units=num_classes, seed=seed)
    self.right = tf_mp.sub_model_2('cpu:2', output_units=num_classes, seed=seed)

  def __call__(self, x):
    with tf.device('cpu:0'):
      return self.left(x) + self.right(x)


class Plain(tf.Module):
  """A user's model written from scratch: its own widths, variables and scopes."""

  def __init__(self, features: int, classes: int, seed: int):
    super().__init__(name='plain')
    rng = np.random.default_rng(seed)
    with tf.device('cpu:1'):
      self.w1 = tf.Variable(rng.normal(0, 0.3, [features, 16]).astype(np.float32), name='w1')
    with tf.device('cpu:2'):
      self.w2 = tf.Variable(rng.normal(0, 0.3, [16, classes]).astype(np.float32), name='w2')

  def __call__(self, x):
    with tf.device('cpu:1'):
      hidden = tf.tanh(tf.matmul(x, self.w1))
    with tf.device('cpu:2'):
      return tf.matmul(hidden, self.w2)


def numpy_loss(logits: np.ndarray, labels: np.ndarray) -> float:
  z = logits.astype(np.float64)
  z = z - z.max(axis=1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return float(-log_p[np.arange(len(labels)), labels].mean())


def numpy_adam(value, grad, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
  """TF1's AdamOptimizer update in float64 (the docstring of tf_mp/adam.py)."""
  m = b1 * m + (1 - b1) * grad
  v = b2 * v + (1 - b2) * grad * grad
  lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
  return value - lr_t * m / (np.sqrt(v) + eps), m, v


class UserModelTest(parameterized.TestCase, tf.test.TestCase):

  def test_two_towers_train_step_matches_numpy_loss_and_an_unplaced_adam_step(self):
    seed = draw_seed()
    model = TwoTowers(num_classes=5, seed=seed % 1000)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 128)).astype(np.float32)
    y = rng.integers(0, 5, size=32).astype(np.int32)
    before = {v.name: v.numpy() for v in model.trainable_variables}
    # The reference gradients: an unplaced GradientTape on the same weights.
    with tf.GradientTape() as tape:
      logits = model(x)
      reference_loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    grads = tape.gradient(reference_loss, model.trainable_variables)
    self.assertAllClose(numpy_loss(logits.numpy(), y), float(reference_loss), rtol=1e-5)

    trainer = tf_mp.Trainer(model)
    loss = trainer.train_step(x, y)
    self.assertAllClose(float(loss), numpy_loss(logits.numpy(), y), rtol=1e-5)
    for var, grad in zip(model.trainable_variables, grads):
      want, _, _ = numpy_adam(before[var.name], grad.numpy().astype(np.float64), 0.0, 0.0, 1)
      self.assertAllClose(var.numpy(), want, atol=1e-6, msg=var.name)

  def test_two_towers_fit_and_placement_report(self):
    model = TwoTowers(num_classes=5)
    trainer = tf_mp.Trainer(model)
    x, y = tf_mp.synthetic_data(0, num_examples=256, num_classes=5)
    result = trainer.fit(x, y, steps=60, batch_size=32, log_every=20)
    self.assertEqual([s for s, _ in result.logged], [0, 20, 40, 59])
    self.assertLess(result.final_loss, result.logged[0][1])
    report = tf_mp.placement_report(model, trainer)
    self.assertEqual([p.name for p in report.parts], ['sub_model_1', 'sub_model_2'])
    for part, index in zip(report.parts, (1, 2)):
      self.assertEqual({device_index(d) for d in part.variable_devices}, {index})
      self.assertEqual({device_index(d) for d in part.op_devices}, {index}, str(report))
      self.assertTrue(part.on_requested_device)
    self.assertIn('sub_model_2  cpu:2', str(report))

  def test_own_widths_and_classes_are_taken_from_the_data(self):
    seed = draw_seed()
    model = Plain(features=20, classes=7, seed=seed)
    trainer = tf_mp.Trainer(model)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 20)).astype(np.float32)
    y = rng.integers(0, 7, size=64)
    result = trainer.fit(x, y, steps=5, batch_size=16)
    self.assertEqual(trainer.num_classes, 7)
    self.assertTrue(np.isfinite(result.final_loss))
    report = tf_mp.placement_report(model, trainer)
    self.assertEqual([p.name for p in report.parts], ['plain'])
    self.assertEqual({device_index(d) for d in report.parts[0].variable_devices}, {1, 2})
    with self.assertRaisesRegex(tf_mp.TfMpError, r'label 7 at row 0 is outside \[0, 7\)'):
      trainer.fit(x, np.full(64, 7), steps=10, batch_size=16)
    with self.assertRaisesRegex(tf_mp.TfMpError, r"'x' has shape \[64, 21\]; expected \[n, 20\]"):
      trainer.train_step(np.zeros([64, 21], np.float32), y)

  def test_features_unknown_before_data(self):
    trainer = tf_mp.Trainer(Plain(features=4, classes=3, seed=0))
    with self.assertRaisesRegex(tf_mp.TfMpError, 'features of Plain are not known yet'):
      tf_mp.placement_report(trainer.model, trainer)
    trainer = tf_mp.Trainer(Plain(features=4, classes=3, seed=0),
                            input_spec=tf.TensorSpec([None, 4], tf.float32))
    self.assertEqual(trainer.num_classes, 3)

  def test_not_a_model(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'model int is not trainable'):
      tf_mp.Trainer(3)
    self.assertIsInstance(TwoTowers(), tf_mp.TrainableModel)


def _weights(model) -> dict:
  return {v.name: v.numpy() for v in model.trainable_variables}


class MirroredAnyModelTest(tf.test.TestCase):
  """The LM and the pipeline under the mirrored strategy equal one group."""

  def _compare(self, build, x, y, steps, batch_size):
    none = tf_mp.distribute.create_strategy('none', 'cpu:0,cpu:1,cpu:2')
    single = tf_mp.Trainer(build(none.devices))
    mirrored = tf_mp.distribute.create_strategy('mirrored', MIRRORED_GROUPS)
    with mirrored.scope():
      replicated_model = build(mirrored.devices)
    replicated = tf_mp.Trainer(replicated_model, strategy=mirrored)
    self.assertEqual(replicated.num_replicas, 2)
    a = single.fit(x, y, steps=steps, batch_size=batch_size, log_every=1)
    b = replicated.fit(x, y, steps=steps, batch_size=batch_size, log_every=1)
    self.assertAllClose([l for _, l in a.logged], [l for _, l in b.logged], rtol=1e-5)
    assert_weights_match(_weights(single.model), _weights(replicated.model),
                         'mirrored 2x3 against one group')

  def test_tiny_lm(self):
    config = tf_mp.lm.LMConfig(vocab_size=11, context=8, d_model=24, num_heads=3,
                               num_blocks=1, mlp_units=48, seed=3)
    rng = np.random.default_rng(draw_seed())
    ids = rng.integers(0, 11, size=(64, 9)).astype(np.int32)
    self._compare(lambda devices: tf_mp.lm.build_lm(config, devices, tensor_parallel=3),
                  ids[:, :-1], ids[:, 1:], steps=6, batch_size=16)

  def test_pipeline(self):
    x, y = tf_mp.synthetic_data(draw_seed() % 1000, num_examples=128)
    self._compare(lambda devices: tf_mp.pipeline.build_pipeline(devices, num_micro_batches=2),
                  x, y, steps=6, batch_size=32)


if __name__ == '__main__':
  tf.test.main()
