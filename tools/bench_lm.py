"""Training speed of the tiny language model for several tensor-parallel widths T, side by side.

For each T the same model (same sizes, same initial weights) is built over T
devices and trained on the built-in corpus. Rounds are interleaved (T=1, T=2,
T=3, T=1, ...) so that a noisy machine slows every T alike; the table shows
the median tokens/s, its ratio to the first T, the parameters each device
holds (read from `variable.device`) with Adam's two slots, and peak memory.

Peak memory is `tf.config.experimental.get_memory_info(device)['peak']`
during the first three steps of each T, minus what was allocated before them
(all models and their Adam slots, the training windows): the activations,
gradients and transfer buffers of a step. Logical CPU devices share one allocator, so
on a CPU-only machine it is one process-wide figure per T; on GPUs it is per
device.

  python tools/bench_lm.py                       # T = 1, 2, 3 on logical CPUs
  python tools/bench_lm.py --tensor_parallel 1,2,4 --num_heads 4 --d_model 128 \
      --mlp_units 512                            # the example's default size
"""

import time

from absl import flags

import benchlib
from tf_mp import cli

benchlib.enable_cpu_memory_stats()  # The step's peak memory.

FLAGS = flags.FLAGS
flags.DEFINE_string('tensor_parallel', '1,2,3', 'The T values to compare.')
cli.define_devices('"auto" (the GPUs, else logical CPUs) or a device list used for every '
                   'T (its first T entries).')
cli.define_lm_model_flags(d_model=192, num_heads=6, mlp_units=768,
                          heads_help='Heads; 6 so that T = 2 and T = 3 both divide.')
cli.define_batch_size(32, 'Windows per step.')
cli.define_steps(10, 'Timed steps per round.')
flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds per T.', lower_bound=1)


def parameters_by_device(model) -> dict:
  """Scalars per device: all variables, and the attention + MLP weights alone."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (after cli.run's start-up)
  from tf_mp.devices import short_device_name  # pylint: disable=g-import-not-at-top
  total, split = {}, {}
  for block in model.blocks:
    for layer in (block.attention, block.mlp):
      for v in layer.trainable_variables:
        key = short_device_name(v.device)
        split[key] = split.get(key, 0) + int(np.prod(v.shape))
  for v in model.trainable_variables:
    key = short_device_name(v.device)
    total[key] = total.get(key, 0) + int(np.prod(v.shape))
  return {'total': total, 'split': split}


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after cli.run's start-up)
  import tf_mp  # pylint: disable=g-import-not-at-top
  from tf_mp import lm  # pylint: disable=g-import-not-at-top
  from tf_mp.devices import short_device_name  # pylint: disable=g-import-not-at-top
  try:
    ts = [int(t) for t in FLAGS.tensor_parallel.split(',')]
  except ValueError:
    raise tf_mp.TfMpError(f'--tensor_parallel {FLAGS.tensor_parallel!r}: expected '
                          'comma-separated integers such as "1,2,3"') from None
  corpus = lm.prepare_corpus(lm.builtin_corpus(), FLAGS.context)
  config = lm.LMConfig(vocab_size=corpus.vocab.size, context=FLAGS.context,
                       d_model=FLAGS.d_model, num_heads=FLAGS.num_heads,
                       num_blocks=FLAGS.num_blocks, mlp_units=FLAGS.mlp_units)
  for t in ts:
    lm.check_tensor_parallel(config, t)
  if FLAGS.devices == 'auto':
    all_devices = tf_mp.resolve_devices('auto', max(ts))
  else:
    all_devices = tf_mp.resolve_devices(FLAGS.devices, max(ts))
  memory_devices = sorted(set(all_devices))
  x, y = corpus.train_x, corpus.train_y

  runs = {}
  for t in ts:
    model = lm.build_lm(config, all_devices[:t])
    trainer = lm.LMTrainer(model)
    before = {}
    for device in memory_devices:
      tf.config.experimental.reset_memory_stats(device)
      before[device] = tf.config.experimental.get_memory_info(device)['current']
    trainer.fit(x, y, steps=3, batch_size=FLAGS.batch_size, log_every=10**9)  # Traces.
    peaks = {short_device_name(d): tf.config.experimental.get_memory_info(d)['peak'] -
                             before[d] for d in memory_devices}
    runs[t] = dict(trainer=trainer, model=model, peaks=peaks,
                   params=parameters_by_device(model))

  tokens = FLAGS.steps * FLAGS.batch_size * FLAGS.context

  def tokens_per_second(trainer):
    start = time.perf_counter()
    trainer.fit(x, y, steps=int(trainer.step.numpy()) + FLAGS.steps,
                batch_size=FLAGS.batch_size, log_every=10**9)
    return tokens / (time.perf_counter() - start)

  rates = benchlib.interleaved(
      {t: (lambda r=runs[t]: tokens_per_second(r['trainer'])) for t in ts}, FLAGS.rounds)

  cpu_shared = all(d.startswith('/device:CPU') for d in memory_devices)
  print(f'Model: {config.num_blocks} blocks, d_model {config.d_model}, '
        f'{config.num_heads} heads, MLP {config.mlp_units}, context '
        f'{config.context}, vocab {config.vocab_size}; batch {FLAGS.batch_size}; '
        f'{FLAGS.rounds} interleaved rounds of {FLAGS.steps} steps per T; '
        f'devices {", ".join(short_device_name(d) for d in all_devices)}')
  print()
  rows = []
  base = benchlib.median(rates[ts[0]])
  for t in ts:
    run = runs[t]
    rate = benchlib.median(rates[t])
    split_total = sum(run['params']['split'].values())
    per_device = ', '.join(
        f'{d}: {n:,} ({run["params"]["split"].get(d, 0) / split_total:.0%})'
        for d, n in sorted(run['params']['total'].items()))
    with_adam = ', '.join(f'{d}: {3 * 4 * n / 2**20:.2f} MiB'
                          for d, n in sorted(run['params']['total'].items()))
    if cpu_shared:
      memory = f'{max(run["peaks"].values()) / 2**20:.0f} MiB'
    else:
      memory = ', '.join(f'{d}: {p / 2**20:.0f} MiB' for d, p in sorted(run['peaks'].items()))
    rows.append((t, f'{rate:,.0f}', f'{rate / base:.2f}x', per_device, with_adam, memory))
  print(benchlib.markdown_table(
      ('T', 'tokens/s (median)', f'vs T={ts[0]}', 'parameters per device (its share of the '
       'attention+MLP weights)', 'params + Adam slots per device', 'step peak memory' +
       (' (one shared CPU allocator)' if cpu_shared else ' per device')), rows))


if __name__ == '__main__':
  cli.run(main, __doc__)
