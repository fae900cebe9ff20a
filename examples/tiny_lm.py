"""A tiny character-level language model, tensor-parallel over devices.

Each block's attention heads and MLP columns are split over T devices
(Megatron-LM's column-then-row pairing; see tf_mp/lm/layers.py). Trains with
the project's TF1-exact Adam, printing `Step: N Loss: X`, the validation loss
and bits per character every --eval_every steps, then a sample.

  python examples/tiny_lm.py                          # built-in corpus, T by rule
  python examples/tiny_lm.py --text my.txt --steps 2000 --logdir /tmp/lm
  python examples/tiny_lm.py --num_heads 6 --d_model 192 --mlp_units 768 \
      --devices cpu:0,cpu:1,cpu:2 --prompt "The " --temperature 0.8
"""

import math
import time

import _startup  # Quiets TensorFlow's start-up lines; imports tf and tf_mp.
from absl import app
from absl import flags
from absl import logging

from tf_mp import lm

FLAGS = flags.FLAGS
flags.DEFINE_string('text', None,
                    'A UTF-8 text file to train on; default: the built-in corpus '
                    "(docstrings of Python's standard library, nothing downloaded).")
flags.DEFINE_integer('steps', 300, 'Training steps (the total, counting resumed ones).')
flags.DEFINE_integer('batch_size', 32, 'Windows per step.')
flags.DEFINE_float('learning_rate', 0.001, 'Adam learning rate.')
flags.DEFINE_integer('log_every', 50, 'Print `Step: N Loss: X` every this many steps.')
flags.DEFINE_integer('eval_every', 100,
                     'Print validation loss and bits per character every this '
                     'many steps (and at the end).')
flags.DEFINE_string('devices', 'auto',
                    'The T devices, e.g. "cpu:0,cpu:1,cpu:2"; "auto": the GPUs, '
                    'else T logical CPU devices.')
flags.DEFINE_integer('tensor_parallel', None,
                     'T; default: the number of --devices listed, or with '
                     '"auto" the first of 3, 2, 4 dividing --num_heads and '
                     '--mlp_units.')
flags.DEFINE_integer('num_blocks', 4, 'Transformer blocks.')
flags.DEFINE_integer('d_model', 128, 'Residual stream width.')
flags.DEFINE_integer('num_heads', 4, 'Attention heads per block.')
flags.DEFINE_integer('mlp_units', 512, 'MLP hidden width.')
flags.DEFINE_integer('context', 128, 'Characters the model reads.')
flags.DEFINE_integer('seed', 0, 'Seed of the weights, window order and sampling.')
flags.DEFINE_string('prompt', 'The ', 'Text the sample continues.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature (0: most likely).')
flags.DEFINE_integer('sample_length', 200, 'Characters to generate.')
flags.DEFINE_string('logdir', None,
                    'Save checkpoints here at every evaluation and resume from '
                    'the latest one.')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)  # The checkpoint saver's INFO lines.
  if FLAGS.text:
    text, source = lm.load_text(FLAGS.text), FLAGS.text
  else:
    text, source = lm.builtin_corpus(), 'built-in corpus'
  corpus = lm.prepare_corpus(text, FLAGS.context, source=source, seed=FLAGS.seed)
  config = lm.LMConfig(vocab_size=corpus.vocab.size, context=FLAGS.context,
                       d_model=FLAGS.d_model, num_heads=FLAGS.num_heads,
                       num_blocks=FLAGS.num_blocks, mlp_units=FLAGS.mlp_units,
                       seed=FLAGS.seed)
  # Check the sampling flags before spending minutes on training.
  lm.check_sampling(corpus.vocab, FLAGS.prompt, FLAGS.sample_length,
                    FLAGS.temperature)
  model = lm.build_lm(config, FLAGS.devices, tensor_parallel=FLAGS.tensor_parallel)
  trainer = lm.LMTrainer(model, FLAGS.learning_rate)
  print(f'Text: {source}, {len(text)} characters, {corpus.vocab.size} distinct; '
        f'unigram entropy {lm.unigram_entropy(corpus.train_ids) / math.log(2):.3f} '
        'bits per character')
  print(f'Model: {config.num_blocks} blocks, d_model {config.d_model}, '
        f'{config.num_heads} heads, context {config.context}; tensor parallel '
        f'over T={model.tensor_parallel}: {", ".join(map(str, model.devices))}',
        flush=True)

  checkpoints = None
  if FLAGS.logdir:
    checkpoints = lm.LMCheckpoints(FLAGS.logdir, trainer, corpus.vocab)
    start = checkpoints.restore_or_initialize()
    if start:
      print(f'Resumed from step {start} ({FLAGS.logdir})')

  def on_log(step, loss_value):
    print('Step:', step, 'Loss:', loss_value, flush=True)

  def evaluate():
    loss = trainer.evaluate(corpus.val_x, corpus.val_y)
    print(f'Validation: step {int(trainer.step.numpy())} loss {loss:.4f} nats, '
          f'{loss / math.log(2):.3f} bits per character', flush=True)
    if checkpoints:
      checkpoints.save()

  start_time, first = time.perf_counter(), int(trainer.step.numpy())
  while int(trainer.step.numpy()) < FLAGS.steps:
    target = min(FLAGS.steps,
                 (int(trainer.step.numpy()) // FLAGS.eval_every + 1) * FLAGS.eval_every)
    trainer.fit(corpus.train_x, corpus.train_y, steps=target,
                batch_size=FLAGS.batch_size, log_every=FLAGS.log_every,
                on_log=on_log)
    evaluate()
  seconds = time.perf_counter() - start_time
  steps = int(trainer.step.numpy()) - first
  if steps:
    print(f'Done: {steps} steps in {seconds:.0f} s, '
          f'{steps * FLAGS.batch_size * FLAGS.context / seconds:.0f} tokens/s')
  sample = lm.generate(model, corpus.vocab, FLAGS.prompt, FLAGS.sample_length,
                       temperature=FLAGS.temperature, seed=FLAGS.seed)
  print(f'Sample (prompt {FLAGS.prompt!r}, temperature {FLAGS.temperature}):')
  print(FLAGS.prompt + sample)


if __name__ == '__main__':
  _startup.run(main)
