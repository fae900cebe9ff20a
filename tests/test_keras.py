"""tf_mp.keras: placement read from the traced Keras train step, equivalence with the core, errors."""

import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import tf_mp
import tf_mp.keras as tk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = ['cpu:0', 'cpu:1', 'cpu:2']
GROUPS = 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'
X, Y = tf_mp.synthetic_data(0)


class Branches(tk.Model):
  """A subclassed model: three on_device Dense branches, a head on cpu:0."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.branches = [tk.on_device(keras.layers.Dense(32, activation='relu',
                                                     name=f'branch_{k}'), d)
                     for k, d in enumerate(DEVICES)]
    self.head = tk.on_device(keras.layers.Dense(10, name='head'), 'cpu:0')
    self.loss_device = 'cpu:0'

  def call(self, inputs):
    return self.head(tf.concat([b(inputs) for b in self.branches], -1))


def functional_model():
  return tk.compile_document(tk.build_model(DEVICES))


def subclassed_model():
  return tk.compile_document(Branches())  # fit builds it (symbolically)


def mirrored_model():
  layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
  model = tk.build_model(layout)
  with layout.scope():
    return tk.compile_document(model)


def _component_devices(weight) -> list:
  """The devices of a Keras weight's TF variable (each replica's copy when mirrored)."""
  variable = weight.value
  values = getattr(variable, 'values', None)
  return [v.device for v in values] if values is not None else [variable.device]


class PlacementTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('functional', functional_model, ('sub_model_1', 'sub_model_2', 'sub_model_3')),
      ('subclassed', subclassed_model, ('branch_0', 'branch_1', 'branch_2')),
      ('mirrored', mirrored_model, ('sub_model_1', 'sub_model_2', 'sub_model_3')),
  )
  def test_every_matmul_of_a_branch_runs_on_its_device(self, make, branches):
    model = make()
    if make is mirrored_model:  # the step traced before any fit (as the program does)
      report = tk.placement_report(model, X[:64], Y[:64])
    else:
      model.fit(X[:128], Y[:128], batch_size=64, epochs=1, verbose=0, shuffle=False)
      report = tk.placement_report(model)  # the step fit traced, not a new one
    replicas = sorted({p.replica for p in report.parts})
    self.assertEqual(replicas, [0, 1] if make is mirrored_model else [0])
    groups = [d.split(',') for d in GROUPS.split(';')]
    for replica in replicas:
      for k, name in enumerate(branches):
        part = report[name, replica]
        want = tf_mp.canonical_device(groups[replica][k])
        self.assertLen(part.forward_matmuls, 2 if make is functional_model or
                       make is mirrored_model else 1)
        self.assertGreaterEqual(len(part.backward_matmuls), len(part.forward_matmuls))
        for op_name, device in part.forward_matmuls + part.backward_matmuls:
          self.assertEqual(tf_mp.devices.device_key(device or 'cpu:99'),
                           tf_mp.devices.device_key(want), op_name)
        self.assertTrue(part.on_requested_device or make is mirrored_model)
        if make is mirrored_model:  # weights: one copy per replica, on its lead device
          self.assertEqual([tf_mp.devices.device_key(d) for d in part.variable_devices],
                           [tf_mp.devices.device_key(groups[replica][0])] if
                           part.parameters else [])
    self.assertIn('backward ops on', str(report))
    # The optimizer's state sits beside its weight, and each weight's update
    # is one ResourceApplyAdam (tf_mp.keras.Adam) on the weight's device.
    optimizer = model.optimizer
    slots = zip(optimizer._trainable_variables, optimizer._momentums,  # pylint: disable=protected-access
                optimizer._velocities)  # pylint: disable=protected-access
    for weight, momentum, velocity in slots:
      for slot in (momentum, velocity):
        self.assertEqual(_component_devices(slot), _component_devices(weight), slot.path)
    applies = [op for op in model.traced_train_graph().get_operations()
               if op.type == 'ResourceApplyAdam']
    self.assertLen(applies, len(model.trainable_weights) * len(replicas))
    weight_devices = {tf_mp.devices.device_key(d) for w in model.trainable_weights
                      for d in _component_devices(w)}
    self.assertEqual({tf_mp.devices.device_key(op.device) for op in applies}, weight_devices)

  def test_plain_keras_model_leaves_backward_ops_unplaced(self):
    """The same layers in a plain keras.Model: Keras's GradientTape step does not
    put sub_model_2's backward MatMuls on cpu:1 (the check above has teeth)."""
    features = keras.Input((128,))
    outputs = [tk.sub_model_1('cpu:0')(features), tk.sub_model_2('cpu:1')(features)]
    logits = keras.layers.Dense(10)(keras.layers.Concatenate()(outputs))
    model = tk.compile_document(keras.Model(features, logits))
    data = (tf.constant(X[:64]), tf.constant(Y[:64]))
    model._symbolic_build(data_batch=data)  # pylint: disable=protected-access
    model.optimizer.build(model.trainable_variables)
    spec = (tf.TensorSpec([None, 128]), tf.TensorSpec([None], tf.int32))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    branch = model.layers[2]
    self.assertEqual(branch.name, 'sub_model_2')
    forward = [n for _, names in branch.__dict__['_tf_mp_traced_ops'][graph]
               for n in names if graph.get_operation_by_name(n).type == 'MatMul']
    self.assertLen(forward, 2)
    for name in forward:
      self.assertEqual(graph.get_operation_by_name(name).device, '/device:CPU:1')
    backward = [op for op in graph.get_operations() if op.type == 'MatMul' and
                any(op.name.startswith(f'gradient_tape/{n}/') for n in forward)]
    self.assertNotEmpty(backward)
    self.assertTrue(all(tf_mp.devices.device_key(op.device or 'cpu:0') !=
                        ('CPU', 1) for op in backward),
                    [(op.name, op.device) for op in backward])


class EquivalenceTest(absltest.TestCase):

  def test_losses_and_step_lines_match_the_core_trainer(self):
    # The program runs beside the in-process check (one step: its Step: 0 line
    # must equal the core's; the 100 steps are compared in-process below).
    program = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'examples', 'tutorial_keras.py'),
         '--steps', '1', '--devices', 'cpu:0,cpu:1,cpu:2'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3'))
    steps = 101
    model = functional_model()
    every_step = tk.StepLogger(every=1, print_fn=lambda line: None)
    lines = []
    document = tk.StepLogger(every=50, print_fn=lines.append)
    model.fit(tk.step_dataset(X, Y, steps, 64), epochs=1, verbose=0, shuffle=False,
              callbacks=[every_step, document])
    trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES), 0.001)
    result = trainer.fit(X, Y, steps=steps, batch_size=64, log_every=1)
    core = np.array([loss for _, loss in result.logged], np.float32)
    mine = np.array([loss for _, loss in every_step.logged], np.float32)
    self.assertEqual([s for s, _ in every_step.logged], list(range(steps)))
    self.assertEqual(mine[0], core[0])  # same weights, same batch: bit for bit
    np.testing.assert_allclose(mine, core, rtol=3e-4)
    # The document's line, formatted as examples/tutorial.py prints it.
    self.assertEqual(lines, [f'Step: 0 Loss: {core[0]}', f'Step: 50 Loss: {mine[50]}',
                             f'Step: 100 Loss: {mine[100]}'])
    stdout, stderr = program.communicate(timeout=300)
    self.assertEqual(program.returncode, 0, stderr[-2000:])
    printed = re.findall(r'^Step: (\d+) Loss: (\S+)$', stdout, re.MULTILINE)
    self.assertEqual(printed, [('0', str(core[0]))])
    self.assertIn('backward ops on', stdout)

  def test_step_logger_with_several_steps_per_execution(self):
    """Keras reports once per 7 steps; the logger still prints steps 0, 5, 10, ..."""
    model = tk.build_model(DEVICES)
    model.compile(keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-8),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=7)
    logger = tk.StepLogger(every=5, print_fn=lambda line: None)
    model.fit(tk.step_dataset(X, Y, 23), verbose=0, shuffle=False, callbacks=[logger])
    self.assertEqual([s for s, _ in logger.logged], [0, 5, 10, 15, 20])
    trainer = tf_mp.Trainer(tf_mp.build_model(DEVICES), 0.001)
    core = dict(trainer.fit(X, Y, steps=23, log_every=5).logged)
    self.assertEqual(logger.logged[0][1], np.float32(core[0]))
    np.testing.assert_allclose([l for _, l in logger.logged],
                               [core[s] for s in (0, 5, 10, 15, 20)], rtol=3e-4)

  def test_initial_weights_and_transfer_both_ways(self):
    model = tk.build_model(DEVICES)
    module = tf_mp.build_model(DEVICES)
    weights = tk.keras_weights(model)
    for var in module.variables:
      np.testing.assert_array_equal(weights[var.name[:-2]].numpy(), var.numpy())
    for var in module.variables:
      var.assign(var + 0.5)
    tk.copy_weights(module, model)
    np.testing.assert_allclose(model.predict(X[:8], verbose=0),
                               module(X[:8]).numpy(), rtol=1e-5, atol=1e-6)
    for w in model.weights:
      w.assign(w.value * 2)
    tk.copy_weights(model, module)
    np.testing.assert_allclose(model.predict(X[:8], verbose=0),
                               module(X[:8]).numpy(), rtol=1e-5, atol=1e-6)

  def test_keras_file_round_trip(self):
    model = functional_model()
    model.fit(tk.step_dataset(X, Y, 3), verbose=0, shuffle=False)
    path = os.path.join(tempfile.mkdtemp(), 'model.keras')
    model.save(path)
    loaded = keras.models.load_model(path)
    self.assertIsInstance(loaded, tk.Model)
    np.testing.assert_array_equal(model.predict(X[:50], verbose=0),
                                  loaded.predict(X[:50], verbose=0))
    self.assertEqual({w.path: w.value.device for w in model.weights},
                     {w.path: w.value.device for w in loaded.weights})
    loaded.fit(tk.step_dataset(X, Y, 4, first_step=3), verbose=0, shuffle=False)
    report = tk.placement_report(loaded)
    self.assertTrue(all(p.on_requested_device for p in report.parts), str(report))
    self.assertEqual(report['sub_model_2'].requested, '/device:CPU:1')


class CompileAndAdamTest(absltest.TestCase):

  def test_compile_defaults(self):
    """Several steps per execution and no XLA by default; one step under a strategy."""
    model = functional_model()
    self.assertEqual(model.steps_per_execution, tk.DEFAULT_STEPS_PER_EXECUTION)
    self.assertFalse(model.jit_compile)
    self.assertEqual(mirrored_model().steps_per_execution, 1)
    model.compile('sgd', 'mse', steps_per_execution=3)
    self.assertEqual(model.steps_per_execution, 3)

  def test_adam_is_keras_adam_with_tf1_rounding(self):
    """Same state names and config as keras.optimizers.Adam; updates equal up to
    rounding (the kernel computes 1 - beta in float32); amsgrad is Keras's own."""
    grads = [tf.constant(np.random.RandomState(0).randn(5, 3), tf.float32) * (k + 1)
             for k in range(3)]
    results = {}
    for name, make in (('keras', keras.optimizers.Adam), ('tf_mp', tk.Adam)):
      for amsgrad in (False, True):
        weight = keras.Variable(np.ones((5, 3), np.float32), name='w')
        optimizer = make(learning_rate=0.01, epsilon=1e-8, amsgrad=amsgrad)
        for grad in grads:
          optimizer.apply_gradients([(grad, weight)])
        state = [v.path.split('/', 1)[1] for v in optimizer.variables]  # no 'adam_3/'
        results[name, amsgrad] = (weight.numpy(), state, optimizer.get_config())
    for amsgrad in (False, True):
      (mine, mine_names, mine_config), (theirs, their_names, their_config) = (
          results['tf_mp', amsgrad], results['keras', amsgrad])
      self.assertEqual(mine_names, their_names)
      self.assertEqual({**mine_config, 'name': None}, {**their_config, 'name': None})
      if amsgrad:
        np.testing.assert_array_equal(mine, theirs)
      else:
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
        self.assertFalse(np.array_equal(mine, np.ones((5, 3))))


class DocsTest(absltest.TestCase):

  def test_python_blocks_of_docs_keras_md_run(self):
    with open(os.path.join(ROOT, 'docs', 'keras.md')) as f:
      blocks = re.findall(r'^```python\n(.*?)^```', f.read(), re.MULTILINE | re.DOTALL)
    self.assertLen(blocks, 3)
    for block in blocks:
      exec(compile(block, 'docs/keras.md', 'exec'), {'__name__': 'docs_keras'})  # pylint: disable=exec-used


class ErrorsTest(absltest.TestCase):

  def assertOneLine(self, error):
    self.assertNotIn('\n', str(error.exception))

  def test_on_device_around_a_non_layer(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'is not a Keras layer') as e:
      tk.on_device(lambda x: x, 'cpu:1')
    self.assertOneLine(e)

  def test_missing_device_names_the_existing_ones(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, "'cpu:9' does not exist.*cpu:0") as e:
      tk.on_device(keras.layers.Dense(3), 'cpu:9')
    self.assertOneLine(e)

  def test_shapes_that_do_not_match(self):
    model = functional_model()
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                r'shape \[64, 100\].*\[batch, 128\]') as e:
      model.fit(X[:64, :100], Y[:64], verbose=0)
    self.assertOneLine(e)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'shape'):
      model.predict(tf.data.Dataset.from_tensor_slices(X[:8, :7]).batch(4), verbose=0)

  def test_model_built_outside_the_strategy_scope(self):
    layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    model = tk.build_model(DEVICES)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'not created under the mirrored') as e:
      model.distribute_over(layout)
    self.assertOneLine(e)
    with layout.scope():
      tk.compile_document(model)
      with self.assertRaisesRegex(tf_mp.TfMpError, "strategy's scope"):
        model.fit(X[:64], Y[:64], verbose=0)
    in_scope = tk.build_model(layout)
    tk.compile_document(in_scope)  # outside the scope
    with self.assertRaisesRegex(tf_mp.TfMpError, 'compiled outside its scope') as e:
      in_scope.fit(X[:64], Y[:64], verbose=0)
    self.assertOneLine(e)


if __name__ == '__main__':
  absltest.main()
