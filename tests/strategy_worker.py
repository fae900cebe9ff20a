"""A training process for the strategy tests: trains, then writes its weights.

  TF_CONFIG=... python tests/strategy_worker.py --strategy multi_worker \
      --steps 100 --batch_size 64 --weights_out /tmp/w0.npz

Prints `Step: N Loss: X` lines like the tutorial and `READY` once the strategy
exists, so a test can tell start-up from training.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import tf_mp  # pylint: disable=g-import-not-at-top
from testing import build_model_in  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string('strategy', 'none', 'none, mirrored or multi_worker.')
flags.DEFINE_string('devices', 'cpu:0,cpu:1,cpu:2', 'Devices or device groups.')
flags.DEFINE_integer('steps', 100, 'Total steps.')
flags.DEFINE_integer('batch_size', 64, 'Global batch.')
flags.DEFINE_integer('log_every', 10, 'Logging interval.')
flags.DEFINE_integer('seed', 0, 'Data and weight seed.')
flags.DEFINE_float('collective_timeout', 30, 'Collective timeout in seconds.')
flags.DEFINE_string('checkpoint_dir', None, 'Checkpoint directory.')
flags.DEFINE_integer('checkpoint_every', 50, 'Checkpoint interval.')
flags.DEFINE_string('weights_out', None, 'Write the final weights (.npz) here.')


def main(argv):
  del argv
  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.WARNING)
  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices,
                                 tf_config=os.environ.get('TF_CONFIG'),
                                 collective_timeout=FLAGS.collective_timeout)
  print('READY', layout.describe(), flush=True)
  x, y = tf_mp.synthetic_data(FLAGS.seed)
  model = build_model_in(layout, tf_mp.ModelConfig(seed=FLAGS.seed))
  trainer = tf_mp.Trainer(model, strategy=layout)
  checkpoints = None
  if FLAGS.checkpoint_dir:
    checkpoints = tf_mp.resume_training(
        FLAGS.checkpoint_dir, trainer, layout,
        log=lambda line: print(line, flush=True))
  result = trainer.fit(x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
              log_every=FLAGS.log_every,
              on_log=lambda s, l: print('Step:', s, 'Loss:', l, flush=True),
              checkpoint_every=FLAGS.checkpoint_every if checkpoints else None,
              on_checkpoint=checkpoints.save if checkpoints else None)
  if FLAGS.weights_out:
    np.savez(FLAGS.weights_out, **{
        v.name: v.numpy() for v in model.trainable_variables})
  print(f'DONE {result.steps} steps, {result.steps_per_second:.1f} steps/s',
        flush=True)


def run():
  try:
    app.run(main)
  except tf_mp.TfMpError as e:
    sys.stderr.write(f'strategy_worker: error: {e}\n')
    sys.exit(1)


if __name__ == '__main__':
  run()
