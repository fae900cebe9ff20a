"""The core: builders, placement, the model against numpy, Adam against TF1's formula, bad input."""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import draw_seed
from tf_mp.devices import device_key as device_index  # (type, index)
from tf_mp.model import ModelConfig, SubModelConfig

DEVICES = ['/device:CPU:0', '/device:CPU:1', '/device:CPU:2']



def numpy_forward(model, x: np.ndarray) -> np.ndarray:
  """The model's computation done by hand from its variables, in float64."""
  outputs = []
  for sub in model.sub_models:
    hidden = np.maximum(x @ sub.hidden.kernel.numpy() + sub.hidden.bias.numpy(), 0)
    outputs.append(hidden @ sub.output.kernel.numpy() + sub.output.bias.numpy())
  joined = np.concatenate(outputs, axis=-1)
  return joined @ model.head.kernel.numpy() + model.head.bias.numpy()


class BuilderTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ('sub_model_1', tf_mp.sub_model_1, 1, 'cpu:0', 256, 64),
      ('sub_model_2', tf_mp.sub_model_2, 2, '/CPU:1', 256, 64),
      ('sub_model_3_uneven', tf_mp.sub_model_3, 3, '/device:CPU:2', 32, 7),
  )
  def test_shape_names_and_device(self, builder, k, device, hidden, out):
    sub = builder(device, hidden_units=hidden, output_units=out)
    batch = np.random.default_rng(draw_seed()).integers(1, 9)
    y = sub(tf.random.normal([batch, 128]))
    self.assertEqual(y.shape, (batch, out))
    self.assertEqual(
        sorted(v.name for v in sub.trainable_variables),
        [f'sub_model_{k}/hidden/bias:0', f'sub_model_{k}/hidden/kernel:0',
         f'sub_model_{k}/output/bias:0', f'sub_model_{k}/output/kernel:0'])
    self.assertEqual(sub.hidden.kernel.shape, (128, hidden))
    self.assertEqual(sub.output.kernel.shape, (hidden, out))
    want = device_index(tf_mp.canonical_device(device))
    for v in sub.trainable_variables:
      self.assertEqual(device_index(v.device), want, v.name)
    self.assertEqual(device_index(y.device), want)

  def test_unplaced_builder(self):
    sub = tf_mp.sub_model_1()
    self.assertIsNone(sub.device)
    self.assertEqual(sub(tf.zeros([2, 128])).shape, (2, 64))

  def test_computation_is_placed_inside_tf_function(self):
    sub = tf_mp.sub_model_2('cpu:1')
    graph = tf.function(sub).get_concrete_function(
        tf.TensorSpec([None, 128], tf.float32)).graph
    matmuls = [op for op in graph.get_operations() if op.type == 'MatMul']
    self.assertLen(matmuls, 2)
    for op in matmuls:
      self.assertEqual(device_index(op.device), ('CPU', 1), op.name)

  def test_glorot_uniform_and_zero_bias(self):
    sub = tf_mp.sub_model_1(seed=draw_seed())
    limit = np.sqrt(6 / (128 + 256))
    kernel = sub.hidden.kernel.numpy()
    self.assertLessEqual(np.abs(kernel).max(), limit)
    self.assertGreater(np.abs(kernel).max(), 0.9 * limit)  # Spans the range.
    self.assertAllEqual(sub.hidden.bias.numpy(), np.zeros(256))


class ModelTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ('document', ModelConfig()),
      ('uneven', ModelConfig(sub_models=(SubModelConfig(64, 16),
                                         SubModelConfig(128, 96),
                                         SubModelConfig(32, 8)))),
  )
  def test_equals_numpy(self, config):
    seed = draw_seed()
    config = ModelConfig(sub_models=config.sub_models, seed=seed)
    model = tf_mp.build_model(DEVICES, config)
    x = np.random.default_rng(seed).standard_normal((17, 128)).astype(np.float32)
    logits = model(x).numpy()
    self.assertEqual(logits.shape, (17, 10))
    self.assertAllClose(logits, numpy_forward(model, x.astype(np.float64)),
                        atol=1e-5, rtol=1e-5, msg=f'seed={seed}')
    self.assertEqual(model.head.kernel.shape, (config.concat_units, 10))

  def test_variable_names_mirror_tf1_scopes(self):
    model = tf_mp.build_model(DEVICES)
    names = sorted(v.name[:-2] for v in model.trainable_variables)
    expected = sorted(['head/kernel', 'head/bias'] + [
        f'sub_model_{k}/{layer}/{kind}' for k in (1, 2, 3)
        for layer in ('hidden', 'output') for kind in ('kernel', 'bias')
    ])
    self.assertEqual(names, expected)

  def test_variables_and_traced_ops_on_their_devices(self):
    model = tf_mp.build_model(DEVICES)
    trainer = tf_mp.Trainer(model)
    report = tf_mp.placement_report(model, trainer)
    graph = trainer.traced_step_graph()
    for k, device in enumerate(DEVICES):
      part = report[f'sub_model_{k + 1}']
      self.assertTrue(part.on_requested_device, str(report))
      self.assertEqual([device_index(d) for d in part.variable_devices],
                       [device_index(device)])
      # Forward and backward matmuls (colocated by tf.gradients) are there too.
      matmuls = [op for op in graph.get_operations()
                 if op.type == 'MatMul' and f'sub_model_{k + 1}/' in op.name]
      self.assertLen(matmuls, 6)  # 2 forward + 2 x 2 gradient.
      for op in matmuls:
        self.assertEqual(device_index(op.device), device_index(device), op.name)
    self.assertEqual(report['head'].parameters, 192 * 10 + 10)
    self.assertEqual(report['sub_model_1'].bytes, 4 * (128 * 256 + 256 + 256 * 64 + 64))
    self.assertIn('sub_model_3', str(report))

  def test_head_on_chosen_output_device(self):
    model = tf_mp.build_model(DEVICES, output_device='cpu:2')
    self.assertEqual(device_index(model.head.kernel.device), ('CPU', 2))

  def test_fewer_devices_are_used_round_robin(self):
    model = tf_mp.build_model(['cpu:0', 'cpu:1'])
    self.assertEqual(model.devices, ['/device:CPU:0', '/device:CPU:1',
                                     '/device:CPU:0'])

  def test_saved_model_serves_the_same_logits(self):
    model = tf_mp.build_model(DEVICES, ModelConfig(seed=draw_seed()))
    x = np.random.default_rng(draw_seed()).standard_normal((5, 128)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
      path = tf_mp.export_saved_model(model, os.path.join(tmp, 'model'))
      serve = tf.saved_model.load(path).signatures['serving_default']
      self.assertEqual(serve.structured_input_signature[1]['features'].shape.as_list(),
                       [None, 128])
      self.assertAllClose(serve(features=tf.constant(x))['logits'], model(x),
                          atol=1e-6)
      with self.assertRaisesRegex(tf_mp.TfMpError, 'already exists'):
        tf_mp.export_saved_model(model, path)


class AdamTest(tf.test.TestCase):

  def test_matches_tf1_formula_with_epsilon_1e_8(self):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    model = tf_mp.build_model(DEVICES, ModelConfig(seed=seed))
    trainer = tf_mp.Trainer(model)
    x, y = tf_mp.synthetic_data(seed, num_examples=64)
    variables = model.trainable_variables
    w = [v.numpy().astype(np.float64) for v in variables]
    m = [np.zeros_like(a) for a in w]
    v2 = [np.zeros_like(a) for a in w]
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-8
    for t in range(1, 4):
      rows = rng.permutation(64)[:32]
      features, labels = tf.constant(x[rows]), tf.constant(y[rows])
      with tf.GradientTape() as tape:
        loss = trainer.compute_loss(features, labels)
      grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
      trainer.train_step(x[rows], y[rows])
      lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
      for i, g in enumerate(grads):
        m[i] = b1 * m[i] + (1 - b1) * g
        v2[i] = b2 * v2[i] + (1 - b2) * g * g
        w[i] = w[i] - lr_t * m[i] / (np.sqrt(v2[i]) + eps)
      for i, var in enumerate(variables):
        self.assertAllClose(var.numpy(), w[i], atol=1e-6, rtol=1e-5,
                            msg=f'{var.name} step {t} seed={seed}')
    self.assertEqual(int(trainer.step.numpy()), 3)
    self.assertAllClose(trainer.optimizer.beta1_power.numpy(), 0.9**4, rtol=1e-6)

  def test_slots_live_beside_their_variables(self):
    model = tf_mp.build_model(DEVICES)
    trainer = tf_mp.Trainer(model)
    for var in model.trainable_variables:
      name = var.name[:-2]
      for slot in (trainer.optimizer.m[name], trainer.optimizer.v[name]):
        self.assertEqual(device_index(slot.device), device_index(var.device))
    self.assertIn('sub_model_2/hidden/kernel/Adam_1', trainer.optimizer.slots())

  def test_fit_logs_every_n_steps_and_resumes(self):
    model = tf_mp.build_model(DEVICES)
    trainer = tf_mp.Trainer(model)
    x, y = tf_mp.synthetic_data(draw_seed(), num_examples=256)
    seen = []
    result = trainer.fit(x, y, steps=25, batch_size=16, log_every=10,
                         on_log=lambda s, l: seen.append((s, l)))
    self.assertEqual([s for s, _ in seen], [0, 10, 20])
    self.assertIsInstance(seen[0][1], np.float32)
    self.assertEqual(result.steps, 25)
    result = trainer.fit(x, y, steps=40, batch_size=16, log_every=10)
    self.assertEqual((result.first_step, result.last_step), (25, 39))
    self.assertEqual(int(trainer.step.numpy()), 40)


class BadInputTest(parameterized.TestCase, tf.test.TestCase):

  def test_inputs_not_128_wide(self):
    model = tf_mp.build_model(DEVICES)
    with self.assertRaisesRegex(tf_mp.TfMpError, r'\[4, 127\].*\[batch, 128\]'):
      model(tf.zeros([4, 127]))

  @parameterized.named_parameters(
      ('label_too_big', lambda x, y: (x, np.where(np.arange(len(y)) == 3, 10, y)),
       r'label 10 at row 3 is outside \[0, 10\)'),
      ('negative_label', lambda x, y: (x, np.where(np.arange(len(y)) == 0, -1, y)),
       r'label -1 at row 0'),
      ('nan', lambda x, y: (np.where(np.arange(128) == 5, np.nan, x).astype(np.float32), y),
       r'non-finite value \(nan\) at row 0, column 5'),
      ('inf', lambda x, y: (np.where(np.arange(128) == 2, np.inf, x).astype(np.float32), y),
       r'non-finite value \(inf\)'),
      ('wide', lambda x, y: (np.zeros((len(y), 130), np.float32), y),
       r"'x' has shape \[16, 130\]; expected \[n, 128\]"),
      ('short_labels', lambda x, y: (x, y[:5]), r"'y' has shape \[5\]; expected \[16\]"),
      ('float_labels', lambda x, y: (x, y.astype(np.float32)), r"'y' has dtype float32"),
  )
  def test_bad_arrays(self, corrupt, message):
    x, y = corrupt(*tf_mp.synthetic_data(0, num_examples=16))
    trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES))
    before = [v.numpy() for v in trainer.model.trainable_variables]
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      trainer.fit(x, y, steps=2, batch_size=4)
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      trainer.train_step(x, y)
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'bad.npz')
      np.savez(path, x=x, y=y)
      with self.assertRaisesRegex(tf_mp.TfMpError, 'bad.npz.*' + message):
        tf_mp.load_npz(path)
    for old, var in zip(before, trainer.model.trainable_variables):
      self.assertAllEqual(old, var.numpy())

  def test_missing_corrupt_and_incomplete_files(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(tf_mp.TfMpError, 'nope.npz.*does not exist'):
        tf_mp.load_npz(os.path.join(tmp, 'nope.npz'))
      good = os.path.join(tmp, 'good.npz')
      np.savez(good, x=np.zeros((4, 128), np.float32), y=np.zeros(4, np.int64))
      x, y = tf_mp.load_npz(good)
      self.assertEqual((x.dtype, y.dtype), (np.float32, np.int32))
      truncated = os.path.join(tmp, 'truncated.npz')
      with open(good, 'rb') as f, open(truncated, 'wb') as g:
        g.write(f.read()[:300])
      with self.assertRaisesRegex(tf_mp.TfMpError, 'truncated.npz.*not a readable .npz'):
        tf_mp.load_npz(truncated)
      other = os.path.join(tmp, 'other.npz')
      np.savez(other, features=np.zeros((4, 128)))
      with self.assertRaisesRegex(tf_mp.TfMpError, r"has arrays \['features'\]; expected 'x'"):
        tf_mp.load_npz(other)

  @parameterized.named_parameters(
      ('missing_gpu', ['gpu:7'], r"device 'gpu:7' does not exist; this machine has: cpu:0"),
      ('missing_cpu', 'cpu:0,cpu:99', r"device 'cpu:99' does not exist"),
      ('malformed', ['banana'], r"'banana'"),
      ('empty_entry', 'cpu:0,,cpu:1', 'empty entry'),
  )
  def test_bad_devices(self, devices, message):
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      tf_mp.build_model(devices)

  def test_device_spellings(self):
    self.assertEqual(tf_mp.resolve_devices(['/CPU:1', 'cpu:2', '/device:CPU:0'], 3),
                     ['/device:CPU:1', '/device:CPU:2', '/device:CPU:0'])
    self.assertEqual(tf_mp.resolve_devices(None, 2), [None, None])

  def test_non_finite_loss_names_the_step(self):
    trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES), learning_rate=1e6)
    x, y = tf_mp.synthetic_data(0, num_examples=64)
    with self.assertRaises(tf_mp.TrainingDivergedError) as caught:
      trainer.fit(x * 1e30, y, steps=50, batch_size=8)
    self.assertRegex(str(caught.exception), r'non-finite .* at step \d+')
    self.assertLess(caught.exception.step, 50)
    # The run stopped at the bad step instead of running on.
    self.assertEqual(int(trainer.step.numpy()), caught.exception.step + 1)

  @parameterized.named_parameters(
      ('steps', dict(steps=0), 'steps must be a positive integer, got 0'),
      ('batch', dict(steps=3, batch_size=-1), 'batch_size must be a positive integer, got -1'),
      ('log', dict(steps=3, log_every=0), 'log_every must be a positive integer'),
  )
  def test_bad_fit_arguments(self, kwargs, message):
    trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES))
    with self.assertRaisesRegex(tf_mp.TfMpError, message):
      trainer.fit(*tf_mp.synthetic_data(0, num_examples=8), **kwargs)

  def test_bad_learning_rate(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'learning_rate must be a finite number'):
      tf_mp.Trainer(tf_mp.build_model(DEVICES), learning_rate=float('nan'))


if __name__ == '__main__':
  tf.test.main()
