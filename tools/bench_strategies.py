"""Speed of the three strategies side by side: steps/s, examples/s, all-reduce time.

  python tools/bench_strategies.py                 # none, mirrored 2x3, multi_worker 2x3
  python tools/bench_strategies.py --steps 500 --batch_size 128

Each strategy runs in its own process(es), one after the other, at the same
configuration (the document's model, `--batch_size` global examples per step):
`none` on cpu:0-2, `mirrored` on cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5, and
`multi_worker` as two processes on 127.0.0.1 with three logical CPUs each
(the chief's numbers are reported). After `--warmup` steps (tracing), `--steps`
steps are timed with `Trainer.fit`; then `--profile_steps` more run under
TensorFlow's profiler, and the time of the collective all-reduce ops
(`CollectiveReduceV2`, the gradients' and the loss's) is read from its host
trace: the union of their intervals per step. On one machine with two cores
every "device" shares the same cores, so the ratios say what replication costs
here, not what it would gain on real accelerators.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import benchlib  # pylint: disable=g-bad-import-order  (first: quiets TensorFlow)
from absl import app
from absl import flags
from absl import logging

from tf_mp import cli

FLAGS = flags.FLAGS
cli.define_steps(300, 'Timed steps per strategy.')
flags.DEFINE_integer('warmup', 50, 'Untimed steps first (tracing, caches).')
flags.DEFINE_integer('profile_steps', 20, 'Steps run under the profiler.')
cli.define_batch_size(64, 'Global batch (examples per step).')
flags.DEFINE_list('strategies', ['none', 'mirrored', 'multi_worker'], 'Which to run.')
flags.DEFINE_string('child', None, 'Internal: run one strategy and print JSON.')

DEVICES = {'none': 'cpu:0,cpu:1,cpu:2',
           'mirrored': 'cpu:0,cpu:1,cpu:2;cpu:3,cpu:4,cpu:5',
           'multi_worker': 'cpu:0,cpu:1,cpu:2'}
TIMEOUT_S = 600


def run_child(kind: str) -> dict:
  """In a child process: trains, times, profiles; returns the figures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_mp  # pylint: disable=g-import-not-at-top
  from tf_mp.reports import profiling  # pylint: disable=g-import-not-at-top

  tf.get_logger().setLevel('ERROR')
  logging.set_verbosity(logging.WARNING)
  layout = tf_mp.distribute.create_strategy(kind, DEVICES[kind],
                                 tf_config=os.environ.get('TF_CONFIG'),
                                 collective_timeout=120)
  x, y = tf_mp.synthetic_data(0)
  with layout.scope():
    model = tf_mp.build_model(layout.devices)
  trainer = tf_mp.Trainer(model, strategy=layout)
  big = 10**9  # Log rarely: logging splits the fit loop into calls.
  trainer.fit(x, y, steps=FLAGS.warmup, batch_size=FLAGS.batch_size, log_every=big)
  timed = trainer.fit(x, y, steps=FLAGS.warmup + FLAGS.steps,
                      batch_size=FLAGS.batch_size, log_every=big)
  trace_dir = tempfile.mkdtemp(prefix='bench_strategies_')
  tf.profiler.experimental.start(trace_dir)
  try:
    trainer.fit(x, y, steps=FLAGS.warmup + FLAGS.steps + FLAGS.profile_steps,
                batch_size=FLAGS.batch_size, log_every=big)
  finally:
    tf.profiler.experimental.stop()
  events = profiling.host_events(profiling.load_trace(trace_dir))
  shutil.rmtree(trace_dir, ignore_errors=True)
  # The window: the executions of the many-steps function.
  calls = [(a, b) for name, a, b in events
           if name.startswith('EagerLocalExecute') and '_run_steps_fn' in name]
  start, end = min(a for a, _ in calls), max(b for _, b in calls)
  collectives = [(max(a, start), min(b, end)) for name, a, b in events
                 if b > start and a < end and _is_collective(name)]
  return {
      'kind': kind,
      'replicas': layout.num_replicas,
      'steps_per_s': timed.steps_per_second,
      'examples_per_s': timed.steps_per_second * FLAGS.batch_size,
      'allreduce_ms_per_step': profiling.union_duration(collectives) / 1e6 / FLAGS.profile_steps,
      'profiled_ms_per_step': profiling.union_duration(calls) / 1e6 / FLAGS.profile_steps,
  }


def _is_collective(name: str) -> bool:
  """The all-reduce ops, and TensorFlow's collective executor running them."""
  return (name.endswith(':CollectiveReduceV2') or
          name.startswith(('CollectiveExecutor::RunClosure',
                           'BaseCollectiveExecutor::ExecuteAsync')))


def child_command(kind: str) -> list:
  return [sys.executable, os.path.abspath(__file__), f'--child={kind}',
          f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}',
          f'--profile_steps={FLAGS.profile_steps}', f'--batch_size={FLAGS.batch_size}']


def parse_result(stdout: str) -> dict:
  for line in reversed(stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  raise RuntimeError(f'no result in the child output: {stdout[-500:]}')


def run_strategy(kind: str) -> dict:
  if kind != 'multi_worker':
    return parse_result(benchlib.run_process(child_command(kind))['stdout'])
  workers = [f'127.0.0.1:{p}' for p in benchlib.free_ports(2)]
  processes = []
  try:
    for index in range(2):
      config = {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': index}}
      processes.append(subprocess.Popen(
          child_command(kind), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True, env=benchlib.quiet_env(TF_CONFIG=json.dumps(config))))
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]
    for p, (_, err) in zip(processes, outputs):
      if p.returncode:
        raise RuntimeError(f'{kind} failed: {err[-2000:]}')
    return parse_result(outputs[0][0])
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()


def main(argv):
  del argv
  if FLAGS.child:
    print(json.dumps(run_child(FLAGS.child)), flush=True)
    return
  results = []
  for kind in FLAGS.strategies:
    print(f'running {kind} ...', file=sys.stderr, flush=True)
    results.append(run_strategy(kind))
  base = results[0]['steps_per_s']
  print(f'Global batch {FLAGS.batch_size}, {FLAGS.steps} timed steps after '
        f'{FLAGS.warmup} warm-up steps; all-reduce from {FLAGS.profile_steps} '
        'profiled steps.\n')
  rows = []
  for r in results:
    share = r['allreduce_ms_per_step'] / r['profiled_ms_per_step']
    rows.append((r['kind'], r['replicas'], f'{r["steps_per_s"]:.1f}',
                 f'{r["examples_per_s"]:.0f}', f'{r["steps_per_s"] / base:.2f}x',
                 f'{r["allreduce_ms_per_step"]:.2f}', f'{r["profiled_ms_per_step"]:.2f}',
                 f'{share:.0%}'))
  print(benchlib.markdown_table(
      ('strategy', 'replicas', 'steps/s', 'examples/s', f'vs {results[0]["kind"]}',
       'all-reduce ms/step (profiler)', 'step ms under profiler', 'all-reduce share'), rows))

if __name__ == '__main__':
  app.run(main)
