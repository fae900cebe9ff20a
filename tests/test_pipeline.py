"""Tests for `tf_mp.pipeline.Pipeline`: GPipe semantics, placement, dataflow, reports, bad input.

Inputs are fresh random draws each run; every assertion message carries the
seed, so a failure can be replayed by fixing it.
"""

import collections
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import draw_seed
from tf_mp.pipeline import best_split

DEVICES = ['/device:CPU:0', '/device:CPU:1', '/device:CPU:2']
BATCH = 32  # A multiple of every M tested.



def _local(device: str) -> str:
  """'/job:localhost/replica:0/task:0/device:CPU:1' -> '/device:CPU:1'."""
  spec = tf.DeviceSpec.from_string(device)
  return f'/device:{spec.device_type}:{spec.device_index or 0}'


def _batch(seed, batch=BATCH, units=128, classes=10):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, units)).astype(np.float32),
          rng.integers(0, classes, size=batch).astype(np.int32))


def _batch_away_from_relu_kinks(reference, seed, margin=1e-5):
  """A batch none of whose ReLU inputs lies within `margin` of 0.

  Micro-batched and full-batch matmuls may round differently (~1e-7); at a
  pre-activation that close to 0 the ReLU's derivative, and so the gradient,
  can legitimately differ. Away from the kinks the two must agree to 1e-5.
  """
  for attempt in range(50):
    x, y = _batch(seed + attempt)
    inputs, closest = tf.constant(x), np.inf
    for stage in reference.stages:
      for layer in stage.layers:
        z = tf.matmul(inputs, layer.kernel) + layer.bias
        if layer.activation is not None:
          closest = min(closest, float(tf.reduce_min(tf.abs(z))))
        inputs = layer.activation(z) if layer.activation else z
    if closest > margin:
      return x, y
  raise AssertionError(f'seed={seed}: no batch away from the ReLU kinks in 50 draws')


class _Sequential(tf.Module):
  """The reference: the same stages called one after another, whole batch."""

  def __init__(self, stages, config):
    super().__init__(name='sequential')
    self.stages = stages
    self.config = config
    self.output_device = None

  def __call__(self, inputs):
    for stage in self.stages:
      inputs = stage(inputs)
    return inputs


def _reference(config):
  """Unplaced stages with the same initial values (kernels are seeded by name)."""
  return _Sequential(tf_mp.pipeline.build_pipeline(None, config).stages, config)


def _by_name(variables):
  return {v.name: v for v in variables}


class GPipeSemanticsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      (f'm{m}_{"remat" if remat else "plain"}', m, remat)
      for m in (1, 2, 4, 8) for remat in (False, True))
  def test_loss_and_gradients_equal_single_batch(self, m, remat):
    seed = draw_seed()
    config = tf_mp.pipeline.PipelineConfig(seed=seed % 1000)
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, config, num_micro_batches=m, remat=remat)
    reference = _reference(config)
    x, y = _batch_away_from_relu_kinks(reference, seed)

    step = tf.function(lambda a, b: pipeline.loss_and_gradients(
        a, b, tf_mp.sparse_softmax_loss))
    loss, grads = step(tf.constant(x), tf.constant(y))
    with tf.device('/device:CPU:0'), tf.GradientTape() as tape:
      want_loss = tf_mp.sparse_softmax_loss(reference(x), y)
    want_grads = dict(zip((v.name for v in reference.trainable_variables),
                          tape.gradient(want_loss, reference.trainable_variables)))

    msg = f'seed={seed} M={m} remat={remat}'
    self.assertAllClose(want_loss, loss, atol=1e-5, rtol=1e-5, msg=msg)
    self.assertLen(grads, len(want_grads))
    for var, grad in zip(pipeline.trainable_variables, grads):
      self.assertAllClose(want_grads[var.name], grad, atol=1e-5, rtol=1e-5,
                          msg=f'{msg} variable={var.name}')

  @parameterized.named_parameters(('m4_plain', 4, False), ('m8_remat', 8, True))
  def test_fifty_adam_steps_equal_full_batch_training(self, m, remat):
    seed = draw_seed()
    config = tf_mp.pipeline.PipelineConfig(seed=seed % 1000)
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, config, num_micro_batches=m, remat=remat)
    reference = _reference(config)
    x, y = _batch(seed, batch=256)
    losses = {}
    for name, model in (('pipeline', pipeline), ('reference', reference)):
      result = tf_mp.Trainer(model).fit(x, y, steps=50, batch_size=BATCH, log_every=10)
      losses[name] = [loss for _, loss in result.logged]
    msg = f'seed={seed} M={m} remat={remat}'
    self.assertAllClose(losses['reference'], losses['pipeline'], atol=1e-4, msg=msg)
    self.assertLess(losses['pipeline'][-1], losses['pipeline'][0], msg=msg)
    # Variables: Adam divides each update by sqrt(v), so a unit whose ReLU
    # input lands within rounding (~1e-7) of 0 on some step gets a visibly
    # different update (seen: ~5e-4 on a few hundred of 100k weights in ~1 of
    # 8 seeds). That is float32 rounding, not the pipeline: the losses above
    # stay within 1e-4. So: 99% of each variable within 1e-4, all within 1e-2.
    want = _by_name(reference.trainable_variables)
    for var in pipeline.trainable_variables:
      diff = np.abs(want[var.name].numpy() - var.numpy())
      self.assertLessEqual(np.mean(diff > 1e-4), 0.01, f'{msg} variable={var.name}')
      self.assertLess(diff.max(), 1e-2, f'{msg} variable={var.name}')


def _micro_batch_membership(graph, m):
  """Op name -> set of micro-batch indices whose data reaches (or only feeds) it.

  Seeds: output i of the features and labels split ops. Membership flows along
  data edges; an op reached from no split (a variable read) joins the
  micro-batch of its consumers when they all agree.
  """
  member = collections.defaultdict(set)
  consumers = collections.defaultdict(list)
  for op in graph.get_operations():
    for t in op.inputs:
      consumers[t.op.name].append(op)
  splits = [op for op in graph.get_operations()
            if op.type == 'Split' and re.search(r'split_(features|labels)/', op.name)]
  assert len(splits) == 2, [op.name for op in splits]
  queue = []
  for split in splits:
    for i, output in enumerate(split.outputs):
      for op in output.consumers():
        member[op.name].add(i)
        queue.append(op)
  while queue:
    op = queue.pop()
    for nxt in consumers[op.name]:
      if not member[op.name] <= member[nxt.name]:
        member[nxt.name] |= member[op.name]
        queue.append(nxt)
  for op in graph.get_operations():
    if not member[op.name]:
      owners = [member[c.name] for c in consumers[op.name]]
      if owners and all(len(o) == 1 and o == owners[0] for o in owners):
        member[op.name] = set(owners[0])
  return member


class PlacementAndDataflowTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('three_devices', 'cpu:0,cpu:1,cpu:2', DEVICES, False),
      ('three_devices_remat', 'cpu:0,cpu:1,cpu:2', DEVICES, True),
      ('round_robin', 'cpu:1,cpu:2', [DEVICES[1], DEVICES[2], DEVICES[1]], False))
  def test_each_stage_on_its_device(self, devices, expected, remat):
    pipeline = tf_mp.pipeline.build_pipeline(devices, num_micro_batches=4, remat=remat)
    self.assertEqual(expected, list(pipeline.devices))
    self.assertEqual(expected[-1], pipeline.output_device)
    report = tf_mp.reports.pipeline_placement(pipeline)
    for part, device in zip(report.parts, expected):
      self.assertEqual([device], [_local(d) for d in part.variable_devices], part.name)
      self.assertNotEmpty(part.op_devices, part.name)
      self.assertTrue(part.on_requested_device, str(report))

  @parameterized.named_parameters(('m4', 4, False), ('m4_remat', 4, True), ('m8', 8, False))
  def test_micro_batches_free_of_cross_dependencies(self, m, remat):
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=m, remat=remat)
    graph = tf_mp.Trainer(pipeline).traced_step_graph()
    self.assertEqual([], _cross_micro_batch_dependencies(self, graph, m))

  def test_checker_finds_a_serialising_control_edge(self):
    # The same pipeline with micro-batch i's forward made to wait for i-1's:
    # the check must flag it (otherwise the test above proves nothing).
    pipeline = _SerialisedPipeline(tf_mp.pipeline.build_pipeline(DEVICES).stages,
                                   num_micro_batches=4)
    graph = tf_mp.Trainer(pipeline).traced_step_graph()
    self.assertNotEmpty(_cross_micro_batch_dependencies(self, graph, 4))


class _SerialisedPipeline(tf_mp.pipeline.Pipeline):
  """A deliberately bad pipeline: each micro-batch waits for the previous one."""

  def _forward(self, micro_batch, i):
    previous = getattr(self, '_previous', None)
    if i == 0 or previous is None:
      outputs = super()._forward(micro_batch, i)
    else:
      with tf.control_dependencies([previous]):
        outputs = super()._forward(tf.identity(micro_batch), i)
    self._previous = outputs
    return outputs


def _cross_micro_batch_dependencies(test, graph, m):
  """Control edges or shared stage ops that tie different micro-batches together."""
  member = _micro_batch_membership(graph, m)
  ops = graph.get_operations()
  # Each micro-batch has its own ops on every device (so the check can fail).
  for i in range(m):
    devices = {_local(op.device) for op in ops if member[op.name] == {i} and op.device}
    test.assertEqual(set(DEVICES), devices, f'micro-batch {i}')
  problems = []
  # Only the joins after the chains (loss sum, gradient sums, Adam) see
  # several micro-batches; no stage op is shared.
  for op in ops:
    if len(member[op.name]) > 1 and re.search(
        r'(^|/)(stage_\d+(_\d+)?|micro_batch_\d+(_backward)?)/', op.name):
      problems.append(f'{op.name} is shared by micro-batches {sorted(member[op.name])}')
  # No control edge from one micro-batch's chain into another's. The one
  # allowed kind: a weight-gradient op waits for the running gradient sum of
  # the same variable, on the same device (`Pipeline.loss_and_gradients`
  # bounds memory that way); it holds back no other device and no activation
  # gradient.
  for op in ops:
    for control in op.control_inputs:
      mine, theirs = member[op.name], member[control.name]
      if len(mine) == 1 and theirs and theirs != mine:
        if (re.search(r'(^|/)accumulate_gradients(_\d+)?/', control.name) and
            _local(control.device) == _local(op.device) and max(theirs) < min(mine)):
          continue
        problems.append(f'control edge {control.name} {sorted(theirs)} -> '
                        f'{op.name} {sorted(mine)}')
  return problems


class ReportsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(('m1', 1), ('m4', 4))
  def test_device_time_report_is_sane(self, m):
    seed = draw_seed()
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=m)
    x, y = _batch(seed, batch=64)
    report = tf_mp.reports.device_time_report(pipeline, x, y, steps=2, warmup=1)
    self.assertLen(report.devices, 3)
    self.assertEqual(2, report.steps)
    self.assertAlmostEqual(2 / (m + 2), report.theoretical_bubble)
    self.assertGreater(report.step_ms, 0)
    for device in report.devices:
      self.assertGreater(device.busy_ms, 0, str(report))
      self.assertGreater(device.ops, 0, str(report))
      self.assertGreaterEqual(device.idle_ms, 0, str(report))
      self.assertBetween(device.busy_fraction, 0.0, 1.0)
      self.assertAllClose(1.0, device.busy_fraction + device.idle_fraction)
    self.assertBetween(report.measured_bubble, 0.0, 1.0)
    self.assertGreaterEqual(report.unattributed_ms, 0)
    self.assertIn('GPipe (K-1)/(M+K-1)', str(report))

  def test_balance_report_is_sane(self):
    config = tf_mp.pipeline.PipelineConfig(stages=((256, 256), (256,), (10,)))
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, config)
    report = tf_mp.reports.balance_report(pipeline, batch_size=16, repeats=1)
    self.assertEqual([128 * 256 + 256 + 256 * 256 + 256, 256 * 256 + 256, 256 * 10 + 10],
                     [s.parameters for s in report.stages])
    self.assertEqual([2 * (128 * 256 + 256 * 256) + 512, 2 * 256 * 256 + 256,
                      2 * 256 * 10 + 10], [s.flops_per_example for s in report.stages])
    for stage in report.stages:
      self.assertGreater(stage.milliseconds, 0)
    self.assertGreaterEqual(report.imbalance, 1.0)
    self.assertLen(report.suggested_split, 3)
    self.assertEqual([256, 256, 256, 10], [u for s in report.suggested_split for u in s])
    self.assertLen(report.suggested_milliseconds, 3)
    self.assertIn('suggested split', str(report))

  @parameterized.named_parameters(
      ('heavy_tail', [1, 1, 1, 1, 4, 4], 3, [4, 5, 6]),
      ('even', [1, 1, 1, 1], 2, [2, 4]),
      ('heavy_head', [6, 1, 1, 1, 1, 1, 1], 2, [1, 7]),
      ('one_each', [3, 1, 2], 3, [1, 2, 3]))
  def test_best_split(self, times, parts, bounds):
    self.assertEqual(bounds, best_split(times, parts))

  def test_theoretical_bubble(self):
    self.assertAlmostEqual(2 / 10, tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=8)
                           .theoretical_bubble())


class BadInputTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(('zero', 0), ('negative', -2), ('float', 2.0),
                                  ('bool', True))
  def test_bad_micro_batch_count(self, m):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'num_micro_batches must be a positive'):
      tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=m)

  def test_batch_not_divisible_in_fit(self):
    trainer = tf_mp.Trainer(tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=4))
    x, y = _batch(draw_seed(), batch=64)
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                r'batch size 30 .*num_micro_batches=4.*multiple of 4'):
      trainer.fit(x, y, steps=1, batch_size=30)
    self.assertEqual(0, int(trainer.step.numpy()))

  def test_batch_not_divisible_in_train_step(self):
    trainer = tf_mp.Trainer(tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=8))
    x, y = _batch(draw_seed(), batch=12)
    with self.assertRaisesRegex(tf_mp.TfMpError, r'batch size 12 .*num_micro_batches=8'):
      trainer.train_step(x, y)
    self.assertEqual(0, int(trainer.step.numpy()))

  def test_stage_output_does_not_fit_next_input(self):
    stages = [tf_mp.pipeline.pipeline_stage(1, 'cpu:0'),
              tf_mp.pipeline.pipeline_stage(2, 'cpu:1', input_units=128, units=(64,))]
    with self.assertRaisesRegex(
        tf_mp.TfMpError,
        r'stage 1 \(stage_1\) outputs \[batch, 256\] but stage 2 \(stage_2\) '
        r'expects \[batch, 128\]'):
      tf_mp.pipeline.Pipeline(stages)

  def test_config_widths_checked(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, r'stage_2: units\[0\] must be a positive'):
      tf_mp.pipeline.build_pipeline(DEVICES, tf_mp.pipeline.PipelineConfig(stages=((8,), (0,), (10,))))

  def test_stage_on_other_device_than_asked(self):
    with self.assertRaisesRegex(tf_mp.TfMpError,
                                r'stage 1 \(stage_1\) was built on cpu:0 but devices '
                                r'asks for cpu:2'):
      tf_mp.pipeline.Pipeline([tf_mp.pipeline.pipeline_stage(1, 'cpu:0')], devices='cpu:2')

  @parameterized.named_parameters(('empty', []), ('not_a_module', [3]))
  def test_bad_stage_list(self, stages):
    with self.assertRaises(tf_mp.TfMpError):
      tf_mp.pipeline.Pipeline(stages)

  def test_unknown_stage_needs_widths(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'stage 4: .*give input_units and units'):
      tf_mp.pipeline.pipeline_stage(4)

  def test_wrong_feature_width(self):
    pipeline = tf_mp.pipeline.build_pipeline(DEVICES, num_micro_batches=2)
    with self.assertRaisesRegex(tf_mp.TfMpError, r'shape \[4, 64\]; expected \[batch, 128\]'):
      pipeline(np.zeros([4, 64], np.float32))


class BuildersTest(tf.test.TestCase):

  def test_stage_builders_and_callables(self):
    # Callables build each stage on the device the pipeline gives it.
    pipeline = tf_mp.pipeline.Pipeline(
        [lambda d, k=k: tf_mp.pipeline.pipeline_stage(k, d) for k in (1, 2, 3)],
        devices='cpu:2,cpu:1,cpu:0', num_micro_batches=2)
    self.assertEqual([DEVICES[2], DEVICES[1], DEVICES[0]], list(pipeline.devices))
    self.assertEqual(((256,), (256,), (10,)), pipeline.config.stages)
    self.assertEqual((128, 10), (pipeline.config.input_units, pipeline.config.num_classes))
    names = sorted(v.name for v in pipeline.trainable_variables)
    self.assertEqual([f'stage_{k}/layer_0/{n}:0' for k in (1, 2, 3) for n in ('bias', 'kernel')],
                     names)
    logits = pipeline(np.zeros([6, 128], np.float32))
    self.assertEqual([6, 10], logits.shape.as_list())

  def test_sub_models_as_stages(self):
    # Any module with input_units/output_units is a stage: the concat form's
    # sub-models chained 128 -> 64 -> 64.
    stages = [tf_mp.sub_model_1('cpu:0'),
              tf_mp.sub_model_2('cpu:1', input_units=64, output_units=10)]
    pipeline = tf_mp.pipeline.Pipeline(stages, num_micro_batches=2)
    self.assertEqual(10, pipeline.config.num_classes)
    self.assertEqual(DEVICES[1], pipeline.output_device)


if __name__ == '__main__':
  tf.test.main()
