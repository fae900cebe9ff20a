"""The source document's TensorFlow program, transcribed to `tf.compat.v1` graph mode.

This is the oracle tf_mp is checked against, and the TF1 side of
`tools/bench_tutorial.py`. It keeps the document's shape line for line:
placeholders, three `sub_model_k(inputs)` functions each under `tf.device` and a
variable scope, `tf.concat([...], axis=-1)`, `AdamOptimizer(0.001).minimize`, a
`Session` loop of `sess.run([optimizer, loss], feed_dict=...)` with the
`step % 100` print. The `...` of the document are filled with the README's
configuration (dense 128 -> 256 ReLU -> 64 per sub-model, head 192 -> 10, mean
sparse softmax cross-entropy), with variables from `get_variable` named as the
port names them. The batches are the rows `tf_mp.batch_indices` picks, so both
programs see the same data at every step.

Run it as a program (graph mode is process-global):
  python tools/reference/tf1_program.py --steps 200 --losses_out losses.npy

With `--dump_dir DIR` it also records what the oracle tests compare, before
training (see `dump_oracle`): `DIR/initial` (Saver checkpoint of the initial
values), `forward.npz` (logits of all of `x`), `gradients.npz` (per-variable
gradients on the step-0 batch), `one_step.npz` (every variable, Adam slots
included, after one Adam step on that batch) and `devices.json` (the device of
every op, as requested in the graph and as placed at run time). It then
restores the initial values and trains as usual.
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tf_mp.data import batch_indices, load_npz, synthetic_data
from tf_mp.errors import TfMpError

tf1 = tf.compat.v1

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 10000, 'Training steps.')
flags.DEFINE_integer('batch_size', 64, 'Examples per step.')
flags.DEFINE_integer('log_every', 100, 'Print the loss every this many steps.')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and of the initializers.')
flags.DEFINE_string('data', None, '.npz with x [n, 128] float32 and y [n] integer.')
flags.DEFINE_integer('num_devices', 3, 'Logical CPU devices; sub-model k on cpu:(k % n).')
flags.DEFINE_float('learning_rate', 0.001, 'Adam learning rate.')
flags.DEFINE_string('restore', None, 'Saver checkpoint to start from instead of fresh initial values.')
flags.DEFINE_string('save_initial', None, 'Saver checkpoint prefix for the initial values.')
flags.DEFINE_string('save_final', None, 'Saver checkpoint prefix for the trained values.')
flags.DEFINE_string('losses_out', None, '.npy file for the loss of every step.')
flags.DEFINE_string('report_json', None, 'JSON file for timing and peak memory.')
flags.DEFINE_bool('quiet', False, 'Do not print the Step lines.')
flags.DEFINE_integer('intra_threads', None, "The session's intra-op thread pool "
                     "(default: TensorFlow's choice, as the document).")
flags.DEFINE_integer('inter_threads', None, "The session's inter-op thread pool "
                     "(default: TensorFlow's choice, as the document).")
flags.DEFINE_bool('no_spinning', False, "Idle pool threads sleep at once "
                  '(ConfigProto.experimental.disable_thread_spinning), as the '
                  "port's default pools (default: TensorFlow's, as the document).")
flags.DEFINE_string('dump_dir', None, 'Directory for the oracle records '
                    '(initial checkpoint, logits, gradients, one Adam step, '
                    'devices), written before training.')


def dense(inputs, units, name, activation=None):
  """`activation(inputs @ kernel + bias)` with TF1 variables `<scope>/<name>/{kernel,bias}`."""
  with tf1.variable_scope(name):
    kernel = tf1.get_variable('kernel', [inputs.shape[-1], units],
                              initializer=tf1.glorot_uniform_initializer())
    bias = tf1.get_variable('bias', [units], initializer=tf1.zeros_initializer())
    outputs = tf.matmul(inputs, kernel) + bias
    return activation(outputs) if activation else outputs


def sub_model_1(inputs, device='/device:CPU:0'):
  with tf.device(device), tf1.variable_scope('sub_model_1'):
    hidden = dense(inputs, 256, 'hidden', tf.nn.relu)
    return dense(hidden, 64, 'output')


def sub_model_2(inputs, device='/device:CPU:1'):
  with tf.device(device), tf1.variable_scope('sub_model_2'):
    hidden = dense(inputs, 256, 'hidden', tf.nn.relu)
    return dense(hidden, 64, 'output')


def sub_model_3(inputs, device='/device:CPU:2'):
  with tf.device(device), tf1.variable_scope('sub_model_3'):
    hidden = dense(inputs, 256, 'hidden', tf.nn.relu)
    return dense(hidden, 64, 'output')


def head(outputs, device='/device:CPU:0'):
  """The head on the concatenated sub-model outputs: dense 192 -> 10 logits."""
  with tf.device(device):
    return dense(outputs, 10, 'head')


def build_graph(num_devices=3, learning_rate=0.001):
  """The document's graph. Returns a dict of its placeholders and tensors."""
  devices = [f'/device:CPU:{k % num_devices}' for k in range(3)]
  inputs = tf1.placeholder(tf.float32, shape=[None, 128])
  labels = tf1.placeholder(tf.int32, shape=[None])
  outputs = tf.concat([sub_model_1(inputs, devices[0]),
                       sub_model_2(inputs, devices[1]),
                       sub_model_3(inputs, devices[2])], axis=-1)
  logits = head(outputs, devices[0])
  with tf.device(devices[0]):
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                       logits=logits))
  optimizer = tf1.train.AdamOptimizer(learning_rate=learning_rate).minimize(loss)
  return dict(inputs=inputs, labels=labels, logits=logits, loss=loss,
              optimizer=optimizer)


def session_config(num_devices):
  config = tf1.ConfigProto(device_count={'CPU': num_devices},
                           allow_soft_placement=False)
  if FLAGS.intra_threads is not None:
    config.intra_op_parallelism_threads = FLAGS.intra_threads
  if FLAGS.inter_threads is not None:
    config.inter_op_parallelism_threads = FLAGS.inter_threads
  config.experimental.disable_thread_spinning = FLAGS.no_spinning
  return config


def dump_oracle(sess, saver, g, x, y, batch_size, dump_dir):
  """Writes the oracle records of the current (initial) values to `dump_dir`.

  Runs one Adam step on the step-0 batch (the caller restores the initial
  values afterwards). The gradients come from a separate `tf.gradients` of the
  same loss, so the document's `minimize` stays as written.
  """
  os.makedirs(dump_dir, exist_ok=True)
  saver.save(sess, os.path.join(dump_dir, 'initial'), write_meta_graph=False)
  variables = tf1.trainable_variables()
  names = [v.op.name for v in variables]
  logits = sess.run(g['logits'], feed_dict={g['inputs']: x})
  np.savez(os.path.join(dump_dir, 'forward.npz'), x=x, logits=logits)
  rows = batch_indices(0, batch_size, len(x))
  feed = {g['inputs']: x[rows], g['labels']: y[rows]}
  grads = sess.run(tf1.gradients(g['loss'], variables), feed_dict=feed)
  loss_value = sess.run(g['loss'], feed_dict=feed)
  np.savez(os.path.join(dump_dir, 'gradients.npz'), __loss__=loss_value,
           **dict(zip(names, grads)))
  metadata = tf1.RunMetadata()
  sess.run(g['optimizer'], feed_dict=feed,
           options=tf1.RunOptions(output_partition_graphs=True),
           run_metadata=metadata)
  every = tf1.global_variables()
  np.savez(os.path.join(dump_dir, 'one_step.npz'),
           **dict(zip([v.op.name for v in every], sess.run(every))))
  placed = {node.name: node.device for graph in metadata.partition_graphs
            for node in graph.node}
  requested = {op.name: op.device for op in tf1.get_default_graph().get_operations()}
  with open(os.path.join(dump_dir, 'devices.json'), 'w') as f:
    json.dump({'requested': requested, 'placed': placed}, f)


def main(argv):
  del argv
  tf1.disable_eager_execution()
  if FLAGS.data:
    x, y = load_npz(FLAGS.data)
  else:
    x, y = synthetic_data(FLAGS.seed)
  tf1.set_random_seed(FLAGS.seed)
  g = build_graph(FLAGS.num_devices, FLAGS.learning_rate)
  inputs, labels, loss, optimizer = g['inputs'], g['labels'], g['loss'], g['optimizer']
  saver = tf1.train.Saver()
  losses = np.zeros([FLAGS.steps], np.float32)
  with tf1.Session(config=session_config(FLAGS.num_devices)) as sess:
    sess.run(tf1.global_variables_initializer())
    if FLAGS.restore:
      saver.restore(sess, FLAGS.restore)
    if FLAGS.save_initial:
      saver.save(sess, FLAGS.save_initial, write_meta_graph=False)
    if FLAGS.dump_dir:
      dump_oracle(sess, saver, g, x, y, FLAGS.batch_size, FLAGS.dump_dir)
      saver.restore(sess, os.path.join(FLAGS.dump_dir, 'initial'))
    start = time.perf_counter()
    for step in range(FLAGS.steps):
      rows = batch_indices(step, FLAGS.batch_size, len(x))
      train_data, train_labels = x[rows], y[rows]
      _, loss_value = sess.run([optimizer, loss],
                               feed_dict={inputs: train_data, labels: train_labels})
      losses[step] = loss_value
      if step % FLAGS.log_every == 0 and not FLAGS.quiet:
        print('Step:', step, 'Loss:', loss_value)
    seconds = time.perf_counter() - start
    if FLAGS.save_final:
      saver.save(sess, FLAGS.save_final, write_meta_graph=False)
  if FLAGS.losses_out:
    np.save(FLAGS.losses_out, losses)
  if FLAGS.report_json:
    with open(FLAGS.report_json, 'w') as f:
      json.dump({'train_seconds': seconds, 'steps': FLAGS.steps,
                 'final_loss': float(losses[-1]),
                 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
                f)


def run_main(argv):
  try:
    main(argv)
  except TfMpError as e:
    sys.exit(f'tf1_program.py: {e}')


if __name__ == '__main__':
  app.run(run_main)
