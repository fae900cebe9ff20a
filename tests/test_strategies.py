"""Strategies in one process: device groups, mirrored == none, per-replica placement, bad input."""

import collections
import json
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import assert_weights_match, build_model_in, device_index, draw_seed

GROUPS = 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, 'examples', 'tutorial.py')
GOOD_TF_CONFIG = {'cluster': {'worker': ['127.0.0.1:2222', '127.0.0.1:2223']},
                  'task': {'type': 'worker', 'index': 1}}


def cpu(k: int) -> str:
  return f'/device:CPU:{k}'


class DeviceGroupsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('two_groups', GROUPS, [[0, 1, 2], [3, 4, 5]]),
      ('flat_list_cut_in_threes', 'cpu:0,cpu:1,cpu:2,cpu:3,cpu:4,cpu:5',
       [[0, 1, 2], [3, 4, 5]]),
      ('one_group', 'cpu:3,cpu:4,cpu:5', [[3, 4, 5]]),
      ('round_robin_within_group', 'cpu:0;cpu:1,cpu:2', [[0, 0, 0], [1, 2, 1]]),
      ('spaces_and_case', ' CPU:0, /cpu:1 ,cpu:2 ; cpu:3,cpu:4,cpu:5 ',
       [[0, 1, 2], [3, 4, 5]]),
      ('list_of_lists', [['cpu:5', 'cpu:4', 'cpu:3']], [[5, 4, 3]]),
      ('auto', 'auto', [[0, 1, 2], [3, 4, 5]]),  # conftest made 6 CPUs.
  )
  def test_parse(self, spec, want):
    groups = tf_mp.distribute.parse_device_groups(spec)
    self.assertEqual(groups, [[cpu(k) for k in group] for group in want])

  def test_none_without_placement(self):
    layout = tf_mp.distribute.create_strategy('none', None)
    self.assertFalse(layout.distributed)
    self.assertEqual(layout.num_replicas, 1)
    self.assertEqual([m.device for m in build_model_in(layout).sub_models], [None] * 3)

  def test_tf_config_parsed(self):
    task = tf_mp.distribute.parse_tf_config(json.dumps(GOOD_TF_CONFIG))
    self.assertEqual((task.task_type, task.task_index, task.num_workers),
                     ('worker', 1, 2))
    self.assertFalse(task.is_chief)
    self.assertTrue(tf_mp.distribute.parse_tf_config(json.dumps(
        dict(GOOD_TF_CONFIG, task={'type': 'worker', 'index': 0}))).is_chief)


def _config(**changes) -> str:
  config = json.loads(json.dumps(GOOD_TF_CONFIG))
  for key, value in changes.items():
    config[key] = value
  return json.dumps(config)


class BadInputTest(parameterized.TestCase):
  """Each mistake: a one-line TfMpError naming the value and what was expected."""

  @parameterized.named_parameters(
      ('unknown_strategy', dict(kind='bogus'), "'bogus' is unknown"),
      ('strategy_not_a_string', dict(kind=3), 'is unknown'),
      ('not_divisible', dict(kind='mirrored', devices='cpu:0,cpu:1,cpu:2,cpu:3'),
       'cannot be divided into groups of 3'),
      ('overlapping_groups', dict(kind='mirrored', devices='cpu:0,cpu:1,cpu:2;cpu:2,cpu:3,cpu:4'),
       'expected disjoint groups'),
      ('empty_group', dict(kind='mirrored', devices='cpu:0,cpu:1,cpu:2;'),
       'empty group'),
      ('missing_device', dict(kind='mirrored', devices='cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:99'),
       "'cpu:99' does not exist"),
      ('groups_without_mirrored', dict(kind='none', devices=GROUPS),
       'runs one device group per process'),
      ('negative_timeout', dict(kind='multi_worker', collective_timeout=-1),
       'collective timeout must be'),
      ('no_tf_config', dict(kind='multi_worker', tf_config=None), 'TF_CONFIG'),
      ('tf_config_not_json', dict(kind='multi_worker', tf_config='{worker: 1'),
       'is not valid JSON'),
      ('tf_config_not_object', dict(kind='multi_worker', tf_config='[1, 2]'),
       'is not a JSON object'),
      ('tf_config_no_cluster', dict(kind='multi_worker', tf_config=_config(cluster={})),
       'no "cluster"'),
      ('tf_config_bad_address', dict(kind='multi_worker', tf_config=_config(
          cluster={'worker': ['127.0.0.1:2222', 'localhost']})), "'localhost'"),
      ('tf_config_bad_port', dict(kind='multi_worker', tf_config=_config(
          cluster={'worker': ['127.0.0.1:99999']})), 'port in 1..65535'),
      ('tf_config_unknown_job', dict(kind='multi_worker', tf_config=_config(
          cluster={'worker': ['a:1'], 'ps': ['b:2']})), "job 'ps'"),
      ('tf_config_no_task', dict(kind='multi_worker', tf_config=_config(task=None)),
       'no "task"'),
      ('tf_config_index_out_of_range', dict(kind='multi_worker', tf_config=_config(
          task={'type': 'worker', 'index': 2})), 'index 2 is not in [0, 2)'),
      ('tf_config_wrong_type', dict(kind='multi_worker', tf_config=_config(
          task={'type': 'chief', 'index': 0})), "task type 'chief'"),
  )
  def test_create_strategy_error(self, kwargs, message):
    kwargs = dict(kwargs)
    kind = kwargs.pop('kind')
    kwargs.setdefault('tf_config', json.dumps(GOOD_TF_CONFIG))
    with self.assertRaises(tf_mp.TfMpError) as caught:
      tf_mp.distribute.create_strategy(kind, **kwargs)
    self.assertIn(message, str(caught.exception))
    self.assertNotIn('\n', str(caught.exception))

  def test_model_not_built_in_scope(self):
    layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    model = tf_mp.build_model(['cpu:0', 'cpu:1', 'cpu:2'])
    with self.assertRaisesRegex(tf_mp.TfMpError, 'was not created under the mirrored'):
      tf_mp.Trainer(model, strategy=layout)

  def test_batch_not_divisible_by_replicas(self):
    layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    trainer = tf_mp.Trainer(build_model_in(layout), strategy=layout)
    x, y = tf_mp.synthetic_data(0, num_examples=64)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'batch_size 63 is not divisible by the 2'):
      trainer.fit(x, y, steps=1, batch_size=63)

  @parameterized.named_parameters(
      ('unknown_strategy', ['--strategy', 'bogus'], {}, "strategy 'bogus' is unknown"),
      ('malformed_tf_config', ['--strategy', 'multi_worker'], {'TF_CONFIG': '{"cluster": '},
       'TF_CONFIG'),
  )
  def test_tutorial_one_line_error(self, args, env, message):
    result = subprocess.run(
        [sys.executable, TUTORIAL, '--steps', '1', *args], capture_output=True,
        text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **env))
    self.assertEqual(result.returncode, 1, result.stderr)
    lines = [l for l in result.stderr.splitlines()
             if l.strip() and not l.startswith(('I0000', 'WARNING: All log'))]
    self.assertLen(lines, 1, result.stderr)
    self.assertIn(message, lines[0])
    self.assertStartsWith(lines[0], 'tutorial.py: error: ')


class WeightsMatchTest(parameterized.TestCase):
  """The cross-layout weight comparison accepts round-off and rejects real differences."""

  @parameterized.named_parameters(
      ('identical', {}, True),
      ('all_within_atol', {'all': 9e-6}, True),
      ('one_adam_outlier', {'one': 6.8e-5}, True),
      ('too_many_outliers', {'four': 6.8e-5}, False),
      ('one_large_difference', {'one': 3e-3}, False),
      ('scalar_off', {'scalar': 2e-5}, False),
  )
  def test_assert_weights_match(self, change, matches):
    rng = np.random.default_rng(draw_seed())
    expected = {'bias': rng.standard_normal(256).astype(np.float32),
                'power': np.float32(0.9)}
    actual = {k: np.array(v, copy=True) for k, v in expected.items()}
    if 'all' in change:
      actual['bias'] += change['all']
    if 'one' in change:
      actual['bias'][7] += change['one']
    if 'four' in change:
      actual['bias'][:4] += change['four']
    if 'scalar' in change:
      actual['power'] = actual['power'] + np.float32(change['scalar'])
    if matches:
      assert_weights_match(expected, actual, 'test')
    else:
      with self.assertRaises(AssertionError):
        assert_weights_match(expected, actual, 'test')


def _weights(model) -> dict:
  return {v.name: v.numpy() for v in model.trainable_variables}


class MirroredTest(parameterized.TestCase, tf.test.TestCase):

  def test_mirrored_equals_none_on_the_same_global_batches(self):
    seed = draw_seed()
    x, y = tf_mp.synthetic_data(seed, num_examples=1024)
    config = tf_mp.ModelConfig(seed=seed)
    none = tf_mp.distribute.create_strategy('none', 'cpu:0,cpu:1,cpu:2')
    single = tf_mp.Trainer(build_model_in(none, config), strategy=none)
    mirrored = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    self.assertEqual(mirrored.num_replicas, 2)
    replicated = tf_mp.Trainer(build_model_in(mirrored, config), strategy=mirrored)
    # Checkpoints every 20 steps split the loop: the dataset must carry on.
    result_1 = single.fit(x, y, steps=50, batch_size=64, log_every=1)
    result_2 = replicated.fit(x, y, steps=50, batch_size=64, log_every=1,
                              checkpoint_every=20, on_checkpoint=lambda s: None)
    self.assertAllClose([l for _, l in result_1.logged],
                        [l for _, l in result_2.logged], atol=1e-5, rtol=0,
                        msg=f'seed {seed}')
    assert_weights_match(_weights(single.model), _weights(replicated.model),
                         f'seed {seed}')
    # The Adam slots accumulate the gradients, so a ReLU input flipping within
    # rounding moves them like the weights (seen: one bias slot element off by
    # 2.3e-5 after 50 steps); they get the same comparison.
    assert_weights_match({n: s.numpy() for n, s in single.optimizer.slots().items()},
                         {n: s.numpy() for n, s in replicated.optimizer.slots().items()},
                         f'Adam slots, seed {seed}')
    self.assertEqual(int(replicated.step.numpy()), 50)
    # Every copy of a mirrored variable holds the same value.
    for var in replicated.model.trainable_variables:
      copies = [c.numpy() for c in var.values]
      self.assertLen(copies, 2)
      self.assertAllEqual(copies[0], copies[1], msg=var.name)

  def test_train_step_splits_the_global_batch(self):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    config = tf_mp.ModelConfig(seed=seed)
    none = tf_mp.distribute.create_strategy('none', 'cpu:0,cpu:1,cpu:2')
    single = tf_mp.Trainer(build_model_in(none, config))
    mirrored = tf_mp.distribute.create_strategy('mirrored', 'cpu:3,cpu:4,cpu:5;cpu:0,cpu:1,cpu:2')
    replicated = tf_mp.Trainer(build_model_in(mirrored, config), strategy=mirrored)
    for _ in range(3):
      x = rng.standard_normal((32, 128)).astype(np.float32)
      y = rng.integers(0, 10, 32).astype(np.int32)
      self.assertAllClose(single.train_step(x, y), replicated.train_step(x, y),
                          atol=1e-5, rtol=0, msg=f'seed {seed}')
    assert_weights_match(_weights(single.model), _weights(replicated.model),
                         f'seed {seed}')

  def test_each_replica_computes_on_its_own_group(self):
    layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    trainer = tf_mp.Trainer(build_model_in(layout), strategy=layout)
    graph = trainer.traced_step_graph()
    # Variables: one copy per replica, on the replica's lead device (TF's rule).
    for var in trainer.model.trainable_variables:
      self.assertEqual([device_index(c.device) for c in var.values], [0, 3], var.name)
    forward = collections.defaultdict(collections.Counter)
    for op in graph.get_operations():
      if not op.device:
        continue  # Variable reads and placeholders: where their input lives.
      top = op.name.split('/')[0]
      if top.startswith('sub_model_'):
        forward[top][device_index(op.device)] += 1
      parts = op.name.split('/')
      if 'gradients' in parts and len(parts) > parts.index('gradients') + 1:
        scope = parts[parts.index('gradients') + 1]
        replica = 1 if 'replica_1' in parts[:parts.index('gradients')] else 0
        if scope.startswith('sub_model_'):
          k = int(scope[-1]) - 1
          self.assertEqual(device_index(op.device), k + 3 * replica, op.name)
    for k in range(3):
      counts = forward[f'sub_model_{k + 1}']
      # Replica 0 on cpu:k, replica 1 on cpu:k+3, the same ops on each.
      self.assertEqual(sorted(counts), [k, k + 3], dict(counts))
      self.assertEqual(counts[k], counts[k + 3])

  def test_replica_placement_is_a_no_op_outside_replicas(self):
    layout = tf_mp.distribute.create_strategy('mirrored', GROUPS)
    model = build_model_in(layout)
    with layout.replica_placement():
      y = model(tf.zeros([2, 128]))
    self.assertEqual(device_index(y.device), 0)
    self.assertIn('2 replica(s) in sync', layout.describe())
    self.assertIn('cpu:3,cpu:4,cpu:5', layout.describe())


if __name__ == '__main__':
  tf.test.main()
