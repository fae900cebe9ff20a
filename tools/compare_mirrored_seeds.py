"""Mirrored 2x3 against one device group, over many seeds: how far can they drift?

What `tests/test_strategies_multi_worker.py` compares against 'none' (the
workers equal in-process mirrored bit for bit; mirrored against none is equal
only up to float32 rounding, which Adam can amplify). One JSON line per seed:
the largest relative loss difference over the steps, and the largest absolute
difference of the logits (first 512 examples) and of any weight.

  .venv/bin/python tools/compare_mirrored_seeds.py --first 2141547600 --count 60
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

import tf_mp

FLAGS = flags.FLAGS
flags.DEFINE_integer('first', 2141547600, 'First seed.')
flags.DEFINE_integer('count', 60, 'Number of seeds.')
flags.DEFINE_integer('steps', 100, 'Steps per run (as the test).')

GROUPS = {'none': 'cpu:0,cpu:1,cpu:2', 'mirrored': 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5'}


def run(kind: str, seed: int, x, y):
  layout = tf_mp.distribute.create_strategy(kind, GROUPS[kind])
  with layout.scope():
    model = tf_mp.build_model(layout.devices, tf_mp.ModelConfig(seed=seed))
  result = tf_mp.Trainer(model, strategy=layout).fit(
      x, y, steps=FLAGS.steps, batch_size=64, log_every=1)
  losses = np.array([loss for _, loss in result.logged])
  return losses, model(x[:512]).numpy(), {v.name: v.numpy() for v in model.trainable_variables}


def main(argv):
  del argv
  tf_mp.ensure_logical_cpus(6)
  for seed in range(FLAGS.first, FLAGS.first + FLAGS.count):
    x, y = tf_mp.synthetic_data(seed)
    (ln, pn, wn), (lm, pm, wm) = run('none', seed, x, y), run('mirrored', seed, x, y)
    print(json.dumps({
        'seed': seed,
        'loss_rel': float(np.max(np.abs(ln - lm) / np.abs(ln))),
        'logits_abs': float(np.max(np.abs(pn - pm))),
        'weights_abs': max(float(np.max(np.abs(wn[k] - wm[k]))) for k in wn),
    }), flush=True)


if __name__ == '__main__':
  app.run(main)
