"""The source document's model-parallel program, in TensorFlow 2.

Three sub-models on three devices read the same [batch, 128] input; their
outputs are concatenated on the last axis and a head makes 10 logits; Adam
(learning rate 0.001) trains it for 10000 steps, printing the document's
`Step: N Loss: X` line every 100 steps. First it prints where each part really
lives, last a one-line summary.

  tf-mp-tutorial                                   # the document's run
  tf-mp-tutorial --devices cpu:0,cpu:1,cpu:2 --steps 500
  tf-mp-tutorial --data my.npz --export_dir /tmp/model
  tf-mp-tutorial --strategy mirrored \\
      --devices "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5" --checkpoint_dir /tmp/ckpt

(`python examples/tutorial.py` in a clone runs the same program.)
"""

# cli first: from its import on, a Ctrl-C ends the program in one line.
from tf_mp import cli  # pylint: disable=g-bad-import-order

import os
from typing import Optional

from absl import flags

FLAGS = flags.FLAGS
NUM_SUB_MODELS = 3


def define_flags() -> None:
  """The tutorial's flags (also used by tests/strategy_worker.py)."""
  cli.define_training_flags(steps=10000, batch_size=64, log_every=100,
                            steps_help='Training steps, as in the document.')
  cli.define_devices(
      'One device per sub-model, e.g. "cpu:0,cpu:1,cpu:2" or "gpu:0,gpu:1,gpu:2"; '
      '"auto" uses the GPUs, else three logical CPU devices. With --strategy '
      'mirrored: device groups, e.g. "cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5" (two '
      'replicas); "auto" makes groups of three of what exists.')
  cli.define_data()
  cli.define_logdir()
  cli.define_export_dir()
  cli.define_strategy_flags()
  cli.define_checkpoint_flags(every=1000)
  flags.DEFINE_enum('concat', 'tf', ['tf', 'custom', 'auto'],
                    'How the sub-model outputs are joined: tf (tf.concat), '
                    'custom (the TfMpConcat op, built by `python -m tf_mp.ops.build`), auto (the '
                    'op when it is built, else tf.concat after a warning). The '
                    'losses are identical either way.')


def check_flags() -> None:
  """What can be checked before TensorFlow loads: devices, every output location."""
  cli.check_device_count(FLAGS.devices, NUM_SUB_MODELS, 'sub-models')
  if FLAGS.strategy.strip().lower() != 'multi_worker':
    cli.check_local_devices(FLAGS.devices, ' (with --strategy multi_worker, '
                            'too, each worker places the model on its own devices)')
  cli.check_output_dirs('export_dir', 'checkpoint_dir', 'logdir')
  cli.check_export_dir_apart('checkpoint_dir', 'logdir')


def train(argv) -> None:
  """The program, after `cli.run` has parsed the flags and started TensorFlow."""
  del argv
  import tf_mp  # pylint: disable=g-import-not-at-top  (loaded by cli.run)
  # Before any tensor exists: devices, groups and the cluster are set up here.
  layout = tf_mp.distribute.create_strategy(FLAGS.strategy, FLAGS.devices,
                                 tf_config=os.environ.get('TF_CONFIG'),
                                 collective_timeout=FLAGS.collective_timeout,
                                 peer_timeout=FLAGS.peer_timeout)
  x, y = cli.load_data()
  if FLAGS.export_dir:
    tf_mp.check_export_dir(FLAGS.export_dir)

  config = tf_mp.ModelConfig(seed=FLAGS.seed, concat=FLAGS.concat)
  with layout.scope():
    model = tf_mp.build_model(layout.devices, config)
  trainer = tf_mp.Trainer(model, FLAGS.learning_rate, strategy=layout)
  if layout.distributed:
    print(layout.describe(), end='\n\n', flush=True)
  else:
    print(tf_mp.placement_report(model, trainer), end='\n\n', flush=True)
  checkpoints = None
  if FLAGS.checkpoint_dir:
    # What defines the run: a resume with other values is refused (one line
    # naming each). The layout and the concat path are left out: checkpoints
    # restore across layouts, and every concat path computes the same numbers.
    widths = [[s.hidden_units, s.output_units] for s in config.sub_models]
    settings = {'seed': FLAGS.seed, 'data': tf_mp.data_identity(x, y),
                'batch_size': FLAGS.batch_size, 'learning_rate': FLAGS.learning_rate,
                'model': {'input_units': config.input_units, 'sub_models': widths,
                          'num_classes': config.num_classes}}
    checkpoints = tf_mp.resume_training(FLAGS.checkpoint_dir, trainer, layout,
                                        log=lambda line: print(line, flush=True),
                                        settings=settings)
  if int(trainer.step.numpy()) >= FLAGS.steps:
    print(f'Nothing to train: already at step {int(trainer.step.numpy())} of '
          f'{FLAGS.steps}', flush=True)
  else:
    logger = cli.StepLogger(FLAGS.logdir)
    with cli.stop_on_signals(trainer, checkpoints.save if checkpoints else None) as stop:
      result = trainer.fit(
          x, y, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
          log_every=FLAGS.log_every, on_log=logger,
          checkpoint_every=FLAGS.checkpoint_every if checkpoints else None,
          on_checkpoint=checkpoints.save if checkpoints else None,
          should_stop=stop.requested)
    logger.close()
    print(cli.done_line(result), flush=True)
  if FLAGS.export_dir:
    print(f'SavedModel written to {tf_mp.export_saved_model(model, FLAGS.export_dir)}')


def main(doc: Optional[str] = None) -> None:
  """The `tf-mp-tutorial` console script (and examples/tutorial.py)."""
  define_flags()
  cli.run(train, doc or __doc__, check_flags)


if __name__ == '__main__':
  main()
