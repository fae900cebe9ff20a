"""The tiny tensor-parallel language model: equal to the unsplit model, placed, learns, bad input."""

import os
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tf_mp
from testing import device_index, draw_seed
from tf_mp import lm

DEVICES = ['cpu:0', 'cpu:1', 'cpu:2']
# Small sizes that T = 1, 2 and 3 all divide: 6 heads, 24 MLP units.
SMALL = lm.LMConfig(vocab_size=13, context=12, d_model=18, num_heads=6,
                    num_blocks=1, mlp_units=24)



def random_weights(model, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {name: (0.3 * rng.standard_normal(value.shape)).astype(np.float32)
          for name, value in model.full_weights().items()}


def full_gradients(model, ids, targets) -> dict:
  """Gradients of the mean loss by unsplit weight name (shards concatenated)."""
  parts = model.shards()

  @tf.function
  def grads(x, y):
    logits = model(x)
    loss = tf_mp.sparse_softmax_loss(logits, y)
    return tf.gradients(loss, [v for p in parts for v in p.variables])

  flat = iter([g.numpy() for g in grads(tf.constant(ids), tf.constant(targets))])
  out = {}
  for p in parts:
    pieces = [next(flat) for _ in p.variables]
    out[p.name] = pieces[0] if p.axis is None else np.concatenate(pieces, p.axis)
  return out


class TensorParallelEqualsUnsplitTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(('t1', 1), ('t2', 2), ('t3', 3))
  def test_logits_gradients_and_adam_steps(self, t):
    seed = draw_seed()
    rng = np.random.default_rng(seed)
    unsplit = lm.build_lm(SMALL, ['cpu:0'])
    split = lm.build_lm(SMALL, DEVICES[:t])
    self.assertEqual(split.tensor_parallel, t)
    weights = random_weights(unsplit, seed)
    unsplit.assign_full_weights(weights)
    split.assign_full_weights(weights)
    ids = rng.integers(0, SMALL.vocab_size, (4, SMALL.context)).astype(np.int32)
    targets = rng.integers(0, SMALL.vocab_size, ids.shape).astype(np.int32)
    msg = f'seed={seed} T={t}'
    self.assertAllClose(unsplit(ids), split(ids), atol=1e-5, rtol=1e-5, msg=msg)
    want, got = full_gradients(unsplit, ids, targets), full_gradients(split, ids, targets)
    self.assertEqual(sorted(want), sorted(got))
    for name in want:
      self.assertAllClose(want[name], got[name], atol=1e-5, rtol=1e-5,
                          msg=f'{msg} {name}')

    trainers = [lm.LMTrainer(unsplit), lm.LMTrainer(split)]
    for _ in range(20):
      batch = rng.integers(0, SMALL.vocab_size, (4, SMALL.context + 1)).astype(np.int32)
      losses = [float(tr.train_step(batch[:, :-1], batch[:, 1:])) for tr in trainers]
      self.assertAllClose(losses[0], losses[1], atol=1e-4, msg=msg)
    after_unsplit, after_split = unsplit.full_weights(), split.full_weights()
    for name in after_unsplit:
      self.assertAllClose(after_unsplit[name], after_split[name], atol=1e-4,
                          rtol=1e-4, msg=f'{msg} {name}')
      # The weights really moved, so equality is not trivial.
      self.assertGreater(np.abs(after_unsplit[name] - weights[name]).max(), 1e-4, name)

  def test_same_seed_same_initial_weights_for_every_t(self):
    base = lm.build_lm(SMALL, ['cpu:0']).full_weights()
    for t in (2, 3):
      other = lm.build_lm(SMALL, DEVICES[:t]).full_weights()
      for name in base:
        self.assertAllEqual(base[name], other[name], msg=f'T={t} {name}')


class PlacementTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(('t2', 2), ('t3', 3))
  def test_each_device_holds_its_share(self, t):
    model = lm.build_lm(SMALL, DEVICES[:t])
    per_device = {}
    total = 0
    for block in model.blocks:
      for layer in (block.attention, block.mlp):
        for variable in layer.trainable_variables:
          if variable.name.endswith('output_bias:0'):
            continue  # Added once after the reduce, on the output device.
          n = int(np.prod(variable.shape))
          per_device[device_index(variable.device)] = (
              per_device.get(device_index(variable.device), 0) + n)
          total += n
    self.assertEqual(sorted(per_device), list(range(t)))
    for device, count in per_device.items():
      self.assertEqual(count, total // t, f'device {device}: {per_device}')
    # Embedding, norms and head on the output device (cpu:0).
    for module in (model.embedding, model.final_norm, model.head):
      for variable in module.trainable_variables:
        self.assertEqual(device_index(variable.device), 0, variable.name)

  def test_shard_ops_run_on_their_device(self):
    model = lm.build_lm(SMALL, DEVICES)
    graph = lm.LMTrainer(model).traced_step_graph()
    for k in range(3):
      ops = [op for op in graph.get_operations()
             if f'/shard_{k}/' in op.name and op.device]
      self.assertNotEmpty(ops)
      # Forward ops and their tf.gradients ops ('[while/]gradients/.../shard_k/...').
      self.assertTrue(any('gradients' in op.name.split('/') for op in ops))
      for op in ops:
        self.assertEqual(device_index(op.device), k, op.name)

  def test_default_tensor_parallel_rule(self):
    self.assertEqual(lm.default_tensor_parallel(lm.LMConfig()), 2)  # 4 heads.
    self.assertEqual(lm.default_tensor_parallel(lm.LMConfig(num_heads=6, d_model=192,
                                                           mlp_units=768)), 3)
    self.assertEqual(lm.default_tensor_parallel(lm.LMConfig(num_heads=5, d_model=20,
                                                           mlp_units=80)), 1)


TEXT = lm.builtin_corpus()[:24000]


class TrainAndGenerateTest(tf.test.TestCase):

  def test_validation_loss_drops_below_unigram_entropy(self):
    seed = draw_seed()
    corpus = lm.prepare_corpus(TEXT, 32, seed=seed, stride=4)
    config = lm.LMConfig(vocab_size=corpus.vocab.size, context=32, d_model=32,
                         num_heads=2, num_blocks=1, mlp_units=64, seed=seed)
    model = lm.build_lm(config, DEVICES[:2])
    trainer = lm.LMTrainer(model, 0.003)
    entropy = lm.unigram_entropy(np.concatenate([corpus.train_ids, corpus.val_ids]))
    before = trainer.evaluate(corpus.val_x, corpus.val_y)
    trainer.fit(corpus.train_x, corpus.train_y, steps=150, batch_size=16,
                log_every=1000)
    after = trainer.evaluate(corpus.val_x, corpus.val_y)
    msg = f'seed={seed} before={before:.3f} after={after:.3f} unigram={entropy:.3f}'
    self.assertGreater(before, entropy, msg)
    self.assertLess(after, entropy, msg)

    for temperature in (0.0, 1.0):
      sample = lm.generate(model, corpus.vocab, 'The ', 40,
                           temperature=temperature, seed=seed)
      self.assertLen(sample, 40)
      self.assertContainsSubset(set(sample), set(corpus.vocab.chars))

  def test_checkpoint_resume_restores_weights_and_step(self):
    corpus = lm.prepare_corpus(TEXT[:3000], 12)
    config = lm.LMConfig(vocab_size=corpus.vocab.size, context=12, d_model=12,
                         num_heads=3, num_blocks=1, mlp_units=12)
    logdir = tempfile.mkdtemp()
    trainer = lm.LMTrainer(lm.build_lm(config, DEVICES))
    trainer.fit(corpus.train_x, corpus.train_y, steps=3, batch_size=4)
    lm.LMCheckpoints(logdir, trainer, corpus.vocab).save()

    resumed = lm.LMTrainer(lm.build_lm(config, DEVICES))
    start = lm.LMCheckpoints(logdir, resumed, corpus.vocab).restore_or_initialize()
    self.assertEqual(start, 3)
    want, got = trainer.model.full_weights(), resumed.model.full_weights()
    for name in want:
      self.assertAllEqual(want[name], got[name], msg=name)
    for name, slot in trainer.optimizer.slots().items():
      self.assertAllEqual(slot, resumed.optimizer.slots()[name], msg=name)

    other_vocab = lm.CharVocab(corpus.vocab.chars[:-1] + '\x7f')
    with self.assertRaisesRegex(tf_mp.TfMpError, 'holds a run with vocab'):
      lm.LMCheckpoints(logdir, resumed, other_vocab).restore_or_initialize()


def write_file(data: bytes) -> str:
  fd, path = tempfile.mkstemp(suffix='.txt')
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
  return path


class BadInputTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ('empty_file', b'', 'is empty'),
      ('whitespace_file', b' \n\n', 'is empty'),
      ('binary_file', b'abc\x00\x01\x02def', 'is binary'),
      ('not_utf8', b'abc \xff\xfe def', 'is not UTF-8'),
  )
  def test_bad_text_file(self, data, pattern):
    with self.assertRaisesRegex(tf_mp.TfMpError, pattern):
      lm.load_text(write_file(data))

  def test_missing_file(self):
    with self.assertRaisesRegex(tf_mp.TfMpError, 'does not exist'):
      lm.load_text('/nonexistent/text.txt')

  @parameterized.named_parameters(('longer', 200, 128), ('barely', 128, 118))
  def test_context_longer_than_text(self, length, context):
    with self.assertRaisesRegex(tf_mp.TfMpError, f'context {context} is longer'):
      lm.prepare_corpus('ab c' * (length // 4), context)

  @parameterized.named_parameters(
      ('heads', dict(num_heads=4, d_model=16, mlp_units=48), 3, 'num_heads 4 is not divisible by 3'),
      ('mlp', dict(num_heads=6, d_model=18, mlp_units=20), 3, 'mlp_units 20 is not divisible'),
      ('heads_listed_devices', dict(num_heads=4, d_model=16, mlp_units=48), None,
       'num_heads 4 is not divisible by 3'),
      ('d_model', dict(num_heads=5, d_model=18, mlp_units=20), 1, 'd_model 18 is not divisible'),
      ('zero_blocks', dict(num_blocks=0), 1, 'num_blocks must be a positive'),
  )
  def test_bad_sizes(self, sizes, t, pattern):
    config = lm.LMConfig(vocab_size=10, **sizes)
    with self.assertRaisesRegex(tf_mp.TfMpError, pattern):
      lm.build_lm(config, DEVICES, tensor_parallel=t)

  def test_bad_generation_requests(self):
    vocab = lm.CharVocab.from_text('abc ')
    model = lm.build_lm(lm.LMConfig(vocab_size=vocab.size, context=4, d_model=4,
                                    num_heads=1, num_blocks=1, mlp_units=4), ['cpu:0'])
    for kwargs, pattern in ((dict(prompt='abz'), 'not in the vocabulary'),
                            (dict(prompt=''), 'prompt is empty'),
                            (dict(temperature=-1.0), 'temperature'),
                            (dict(length=0), 'sample length')):
      args = dict(prompt='ab', length=3, temperature=1.0)
      args.update(kwargs)
      with self.assertRaisesRegex(tf_mp.TfMpError, pattern):
        lm.generate(model, vocab, args['prompt'], args['length'],
                    temperature=args['temperature'])

  def test_a_temperature_near_zero_samples_the_most_likely(self):
    # 1e-320 made the probabilities NaN: a numpy ValueError traceback after training.
    vocab = lm.CharVocab.from_text('abc ')
    model = lm.build_lm(lm.LMConfig(vocab_size=vocab.size, context=4, d_model=4,
                                    num_heads=1, num_blocks=1, mlp_units=4), ['cpu:0'])
    self.assertEqual(lm.generate(model, vocab, 'ab', 6, temperature=1e-320),
                     lm.generate(model, vocab, 'ab', 6, temperature=0.0))

  def test_bad_windows(self):
    model = lm.build_lm(SMALL, ['cpu:0'])
    trainer = lm.LMTrainer(model)
    ids = np.zeros([2, SMALL.context], np.int32)
    with self.assertRaisesRegex(tf_mp.TfMpError, 'contain id 13'):
      trainer.train_step(ids, ids + 13)
    with self.assertRaisesRegex(tf_mp.TfMpError, r'expected \[n, time\]'):
      trainer.train_step(np.zeros([2, SMALL.context + 1], np.int32),
                         np.zeros([2, SMALL.context + 1], np.int32))


if __name__ == '__main__':
  tf.test.main()
