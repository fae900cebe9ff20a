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

import os
import statistics
import sys
import time

# The examples' start-up: quiet TensorFlow, TfMpError as one line.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                'examples'))
import _startup  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import tf_mp  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_mp import lm  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_mp.devices import short_device_name  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('tensor_parallel', '1,2,3', 'The T values to compare.')
flags.DEFINE_string('devices', 'auto',
                    '"auto" (the GPUs, else logical CPUs) or a device list used '
                    'for every T (its first T entries).')
flags.DEFINE_integer('num_blocks', 4, 'Transformer blocks.')
flags.DEFINE_integer('d_model', 192, 'Residual width (192 = 6 heads of 32).')
flags.DEFINE_integer('num_heads', 6, 'Heads; 6 so that T = 2 and T = 3 both divide.')
flags.DEFINE_integer('mlp_units', 768, 'MLP hidden width (4 * d_model).')
flags.DEFINE_integer('context', 128, 'Characters per window.')
flags.DEFINE_integer('batch_size', 32, 'Windows per step.')
flags.DEFINE_integer('steps', 10, 'Timed steps per round.')
flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds per T.')
flags.DEFINE_bool('verbose', False, "Show TensorFlow's own start-up messages.")


def parameters_by_device(model) -> dict:
  """Scalars per device: all variables, and the attention + MLP weights alone."""
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
    runs[t] = dict(trainer=trainer, model=model, peaks=peaks, rates=[],
                   params=parameters_by_device(model))

  tokens = FLAGS.steps * FLAGS.batch_size * FLAGS.context
  for _ in range(FLAGS.rounds):
    for t in ts:
      trainer = runs[t]['trainer']
      start = time.perf_counter()
      trainer.fit(x, y, steps=int(trainer.step.numpy()) + FLAGS.steps,
                  batch_size=FLAGS.batch_size, log_every=10**9)
      runs[t]['rates'].append(tokens / (time.perf_counter() - start))

  cpu_shared = all(d.startswith('/device:CPU') for d in memory_devices)
  print(f'Model: {config.num_blocks} blocks, d_model {config.d_model}, '
        f'{config.num_heads} heads, MLP {config.mlp_units}, context '
        f'{config.context}, vocab {config.vocab_size}; batch {FLAGS.batch_size}; '
        f'{FLAGS.rounds} interleaved rounds of {FLAGS.steps} steps per T; '
        f'devices {", ".join(short_device_name(d) for d in all_devices)}')
  print()
  print('| T | tokens/s (median) | vs T=%d | parameters per device (its share of the '
        'attention+MLP weights) '
        '| params + Adam slots per device | step peak memory%s |' % (
            ts[0], ' (one shared CPU allocator)' if cpu_shared else ' per device'))
  print('|---|---|---|---|---|---|')
  base = statistics.median(runs[ts[0]]['rates'])
  for t in ts:
    run = runs[t]
    rate = statistics.median(run['rates'])
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
    print(f'| {t} | {rate:,.0f} | {rate / base:.2f}x | {per_device} | {with_adam} '
          f'| {memory} |')


if __name__ == '__main__':
  _startup.run(main)
