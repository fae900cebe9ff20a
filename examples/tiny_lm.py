"""A tiny character-level language model, tensor-parallel over devices.

Each block's attention heads and MLP columns are split over T devices
(Megatron-LM's column-then-row pairing; see tf_mp/lm/layers.py). Trains with
the project's TF1-exact Adam, printing `Step: N Loss: X`, the validation loss
and bits per character every --eval_every steps, then a sample.

  python examples/tiny_lm.py                          # built-in corpus, T by rule
  python examples/tiny_lm.py --text my.txt --steps 2000 --logdir /tmp/lm
  python examples/tiny_lm.py --num_heads 6 --d_model 192 --mlp_units 768 \\
      --devices cpu:0,cpu:1,cpu:2 --prompt "The " --temperature 0.8
"""

# cli first: from its import on, a Ctrl-C ends the program in one line.
from tf_mp import cli  # pylint: disable=g-bad-import-order

import math
import time

from absl import flags

import tf_mp

FLAGS = flags.FLAGS
cli.define_training_flags(steps=300, batch_size=32, log_every=50,
                          batch_help='Windows per step.',
                          seed_help='Seed of the weights, window order and sampling.')
cli.define_devices('The T devices, e.g. "cpu:0,cpu:1,cpu:2"; "auto": the GPUs, else T '
                   'logical CPU devices.')
cli.define_logdir('Save checkpoints here at every evaluation and resume from the latest one.')
flags.DEFINE_string('text', None, 'A UTF-8 text file to train on; default: the built-in '
                    "corpus (docstrings of Python's standard library, nothing downloaded).")
cli.require_non_empty('text', 'the path of a UTF-8 text file (leave the flag out for '
                      'the built-in corpus)')
flags.DEFINE_integer('eval_every', 100, 'Print validation loss and bits per character '
                     'every this many steps (and at the end).', lower_bound=1)
flags.DEFINE_integer('tensor_parallel', None, 'T; default: the number of --devices listed, '
                     'or with "auto" the first of 3, 2, 4 dividing --num_heads and '
                     '--mlp_units.', lower_bound=1)
cli.define_lm_model_flags()
flags.DEFINE_string('prompt', 'The ', 'Text the sample continues.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature (0: most likely).')
cli.require_finite('temperature', 0, inclusive=True, note=' (0: the most likely character)')
# One model call per character (about 40 ms at the default sizes on a busy
# 2-core CPU): the bound keeps the sample to minutes.
MAX_SAMPLE_LENGTH = 10_000
flags.DEFINE_integer('sample_length', 200, 'Characters to generate (0: no sample; at '
                     f'most {MAX_SAMPLE_LENGTH:,}).', lower_bound=0,
                     upper_bound=MAX_SAMPLE_LENGTH)


def check_flags():
  """What can be checked before TensorFlow loads: devices, the output directory."""
  cli.check_local_devices(FLAGS.devices)
  cli.check_output_dirs('logdir')


def main(argv):
  del argv
  lm = tf_mp.lm
  text, source = ((lm.load_text(FLAGS.text), FLAGS.text) if FLAGS.text
                  else (lm.builtin_corpus(), 'built-in corpus'))
  corpus = lm.prepare_corpus(text, FLAGS.context, source=source, seed=FLAGS.seed)
  config = lm.LMConfig(vocab_size=corpus.vocab.size, context=FLAGS.context,
                       d_model=FLAGS.d_model, num_heads=FLAGS.num_heads,
                       num_blocks=FLAGS.num_blocks, mlp_units=FLAGS.mlp_units, seed=FLAGS.seed)
  # Check the sampling flags, and the sizes against the memory, before
  # spending minutes on building and training.
  if FLAGS.sample_length:  # 0, which the flag allows, was refused by check_sampling.
    lm.check_sampling(corpus.vocab, FLAGS.prompt, FLAGS.sample_length, FLAGS.temperature)
  lm.check_lm_fits(config, FLAGS.batch_size)
  model = lm.build_lm(config, FLAGS.devices, tensor_parallel=FLAGS.tensor_parallel)
  trainer = lm.LMTrainer(model, FLAGS.learning_rate)
  print(f'Text: {source}, {len(text)} characters, {corpus.vocab.size} distinct; unigram '
        f'entropy {lm.unigram_entropy(corpus.train_ids) / math.log(2):.3f} bits per character')
  print(f'Model: {config.num_blocks} blocks, d_model {config.d_model}, {config.num_heads} '
        f'heads, context {config.context}; tensor parallel over T={model.tensor_parallel}: '
        f'{", ".join(map(str, model.devices))}', flush=True)
  checkpoints = (lm.LMCheckpoints(FLAGS.logdir, trainer, corpus.vocab,
                                 log=lambda line: print(line, flush=True))
                 if FLAGS.logdir else None)
  if checkpoints and checkpoints.restore_or_initialize():
    print(f'Resumed from step {int(trainer.step.numpy())} ({FLAGS.logdir})')

  start_time, first = time.perf_counter(), int(trainer.step.numpy())
  with cli.stop_on_signals(trainer, checkpoints.save if checkpoints else None) as stop:
    while int(trainer.step.numpy()) < FLAGS.steps and not stop.requested():
      step = int(trainer.step.numpy())
      trainer.fit(corpus.train_x, corpus.train_y, batch_size=FLAGS.batch_size,
                  steps=min(FLAGS.steps, (step // FLAGS.eval_every + 1) * FLAGS.eval_every),
                  log_every=FLAGS.log_every, on_log=cli.StepLogger(), should_stop=stop.requested)
      loss = trainer.evaluate(corpus.val_x, corpus.val_y)
      print(f'Validation: step {int(trainer.step.numpy())} loss {loss:.4f} nats, '
            f'{loss / math.log(2):.3f} bits per character', flush=True)
      if checkpoints:
        checkpoints.save()
  seconds, steps = time.perf_counter() - start_time, int(trainer.step.numpy()) - first
  if steps:
    print(f'Done: {steps} steps in {seconds:.0f} s, '
          f'{steps * FLAGS.batch_size * FLAGS.context / seconds:.0f} tokens/s')
  if FLAGS.sample_length:
    sample = lm.generate(model, corpus.vocab, FLAGS.prompt, FLAGS.sample_length,
                         temperature=FLAGS.temperature, seed=FLAGS.seed)
    print(f'Sample (prompt {FLAGS.prompt!r}, temperature {FLAGS.temperature}):')
    print(FLAGS.prompt + sample)


if __name__ == '__main__':
  cli.run(main, __doc__, check_flags)
