"""Pieces checked against independent references: numpy, by hand, the traced graph."""

import math

import numpy as np
import tensorflow as tf

import tf_mp
from testing import device_index, draw_seed
from tf_mp.data import batch_at
from tf_mp.lm.layers import causal_attention


def numpy_causal_attention(q, k, v):
  """softmax(q k^T / sqrt(d), masked to key <= query) v, in float64."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  scores = np.einsum('bhqd,bhkd->bhqk', q, k) / math.sqrt(q.shape[-1])
  length = q.shape[2]
  scores = np.where(np.tril(np.ones([length, length], bool)), scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhqk,bhkd->bhqd', weights, v)


def numpy_cross_entropy(logits, labels) -> float:
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
  return float(-np.take_along_axis(log_p, labels[:, None], -1).mean())


class AttentionTest(tf.test.TestCase):

  def test_equals_numpy(self):
    rng = np.random.default_rng(draw_seed())
    q, k, v = (rng.normal(size=(2, 3, 7, 5)).astype(np.float32) for _ in range(3))
    self.assertAllClose(causal_attention(q, k, v), numpy_causal_attention(q, k, v),
                        atol=1e-5)

  def test_position_t_does_not_see_t_plus_1(self):
    rng = np.random.default_rng(draw_seed())
    q, k, v = (rng.normal(size=(1, 2, 6, 4)).astype(np.float32) for _ in range(3))
    before = causal_attention(q, k, v).numpy()
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 4:] += 10.0  # Change keys and values at positions 4 and 5 only.
    v2[:, :, 4:] -= 10.0
    after = causal_attention(q, k2, v2).numpy()
    self.assertAllEqual(before[:, :, :4], after[:, :, :4])
    self.assertNotAllClose(before[:, :, 4:], after[:, :, 4:])

  def test_whole_model_is_causal(self):
    config = tf_mp.lm.LMConfig(vocab_size=13, context=8, d_model=16, num_heads=2,
                               num_blocks=1, mlp_units=32, seed=1)
    model = tf_mp.lm.build_lm(config, ['cpu:0', 'cpu:1'], tensor_parallel=2)
    ids = np.random.default_rng(draw_seed()).integers(0, 13, size=(1, 8)).astype(np.int32)
    changed = ids.copy()
    changed[0, 5] = (ids[0, 5] + 1) % 13
    a, b = model(ids).numpy(), model(changed).numpy()
    self.assertAllEqual(a[0, :5], b[0, :5])
    self.assertNotAllClose(a[0, 5:], b[0, 5:])


class DataTest(tf.test.TestCase):

  def test_batch_at_equals_batch_indices(self):
    x = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    y = np.arange(70, dtype=np.int32)
    for step in (0, 1, 7, 1000):
      features, labels = batch_at(tf.constant(x), tf.constant(y), tf.constant(step), 32)
      rows = tf_mp.batch_indices(step, 32, 70)
      self.assertAllEqual(features, x[rows])
      self.assertAllEqual(labels, y[rows])
    # By hand: step 2 of batch 32 over 70 rows wraps around after row 69.
    self.assertEqual(list(tf_mp.batch_indices(2, 32, 70)[:8]),
                     [64, 65, 66, 67, 68, 69, 0, 1])


class AdamTest(tf.test.TestCase):

  def test_direct_use_with_its_own_defaults_equals_tf1_formula(self):
    rng = np.random.default_rng(draw_seed())
    start = rng.normal(size=(4, 3)).astype(np.float32)
    var = tf.Variable(start, name='w')
    adam = tf_mp.Adam()
    adam.build([var])
    value, m, v = start.astype(np.float64), 0.0, 0.0
    for t in range(1, 4):
      grad = rng.normal(size=(4, 3)).astype(np.float32)
      adam.apply_gradients([(tf.constant(grad), var)])
      m = 0.9 * m + 0.1 * grad
      v = 0.999 * v + 0.001 * grad.astype(np.float64)**2
      lr_t = 0.001 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
      value = value - lr_t * m / (np.sqrt(v) + 1e-8)
      self.assertAllClose(var.numpy(), value, atol=1e-6, msg=f'step {t}')
    self.assertAllClose(adam.beta1_power.numpy(), 0.9**4, rtol=1e-6)
    self.assertAllClose(adam.beta2_power.numpy(), 0.999**4, rtol=1e-6)
    self.assertEqual(sorted(adam.slots()), ['beta1_power', 'beta2_power', 'w/Adam', 'w/Adam_1'])


class TutorialModelTest(tf.test.TestCase):

  def test_loss_equals_numpy(self):
    model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'])
    trainer = tf_mp.Trainer(model)
    x, y = tf_mp.synthetic_data(draw_seed() % 1000, num_examples=64)
    logits = model(x).numpy()
    loss = float(trainer.compute_loss(tf.constant(x), tf.constant(y)))
    self.assertAllClose(loss, numpy_cross_entropy(logits, y), rtol=1e-6)
    self.assertAllClose(float(trainer.train_step(x, y)), loss, rtol=1e-6)

  def test_head_and_loss_run_on_the_output_device(self):
    model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'], output_device='cpu:2')
    graph = tf_mp.Trainer(model).traced_step_graph()
    head = [op for op in graph.get_operations()
            if op.type == 'MatMul' and 'head/' in op.name]
    self.assertLen(head, 3)  # Forward, and the gradients of kernel and input.
    loss = [op for op in graph.get_operations()
            if op.type == 'SparseSoftmaxCrossEntropyWithLogits']
    self.assertLen(loss, 1)
    for op in head + loss:
      self.assertEqual(device_index(op.device), 2, op.name)
    self.assertEqual(device_index(model.head.kernel.device), 2)


if __name__ == '__main__':
  tf.test.main()
