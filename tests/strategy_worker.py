"""A training process for the strategy tests: trains, then writes its weights.

  TF_CONFIG=... python tests/strategy_worker.py --strategy multi_worker \\
      --steps 100 --batch_size 64 --weights_out /tmp/w0.npz

Prints `Step: N Loss: X` lines like the tutorial and `READY` once the strategy
exists, so a test can tell start-up from training. Flags, start-up and the
one-line errors are the programs' own (tf_mp/cli.py).
"""

import os
import sys

from absl import flags

import tf_mp
from tf_mp import cli

FLAGS = flags.FLAGS
cli.define_training_flags(steps=100, batch_size=64, log_every=10)
cli.define_devices('Devices or device groups.', default='cpu:0,cpu:1,cpu:2')
cli.define_strategy_flags(collective_timeout=30)
cli.define_checkpoint_flags(every=50)
flags.DEFINE_string('weights_out', None, 'Write the final weights (.npz) here.')
flags.DEFINE_bool('hold', False, 'After READY, idle until stdin closes, then exit '
                  '(a test reads the running server meanwhile).')


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices,
                                 tf_config=os.environ.get('TF_CONFIG'),
                                 collective_timeout=FLAGS.collective_timeout,
                                 peer_timeout=FLAGS.peer_timeout)
  print('READY', layout.describe(), flush=True)
  if FLAGS.hold:
    sys.stdin.read()
    return
  x, y = tf_mp.synthetic_data(FLAGS.seed)
  with layout.scope():
    model = tf_mp.build_model(layout.devices, tf_mp.ModelConfig(seed=FLAGS.seed))
  trainer = tf_mp.Trainer(model, FLAGS.learning_rate, strategy=layout)
  checkpoints = None
  if FLAGS.checkpoint_dir:
    checkpoints = tf_mp.resume_training(FLAGS.checkpoint_dir, trainer, layout,
                                        log=lambda line: print(line, flush=True))
  result = trainer.fit(x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
                       log_every=FLAGS.log_every, on_log=cli.StepLogger(),
                       checkpoint_every=FLAGS.checkpoint_every if checkpoints else None,
                       on_checkpoint=checkpoints.save if checkpoints else None)
  if FLAGS.weights_out:
    np.savez(FLAGS.weights_out, **{v.name: v.numpy() for v in model.trainable_variables})
  print(f'DONE {result.steps} steps, {result.steps_per_second:.1f} steps/s', flush=True)


if __name__ == '__main__':
  cli.run(main, __doc__)
