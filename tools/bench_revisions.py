"""Runs one benchmark on an old revision of tf_mp and on this tree, interleaved.

"Is the new code slower?" answered side by side in one run: the benchmark
command runs in a clean checkout of --old (a temporary `git worktree`, removed
at the end) and in this working tree, alternately (the order rotates), --rounds
times each, each time in a fresh process that imports that tree's tf_mp. The
figures are read from each run's output with --metric, a regular expression
with two groups (a row label and a number); the table shows each label's median
on both sides and the new code's speed relative to the old (above 1: faster).

  # The tiny LM (tokens/s per T, higher is better):
  .venv/bin/python tools/bench_revisions.py --old 5c61aef \\
      --metric '^\\| (\\d+) \\| ([\\d,.]+) \\|' -- tools/bench_lm.py --steps 20 --rounds 1
  # The pipeline (step ms per M and remat, lower is better):
  .venv/bin/python tools/bench_revisions.py --old 5c61aef --better lower \\
      --metric '^\\| (\\d+ \\| \\w+) \\| ([\\d.]+) \\|' -- tools/bench_pipeline.py --rounds 2
"""

import os
import re
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

import benchlib

FLAGS = flags.FLAGS
flags.DEFINE_string('old', None, 'The old revision (a commit, tag or branch).', required=True)
flags.DEFINE_string('metric', None, 'Regex with two groups, (label, number), matched per '
                    'line of the benchmark output.', required=True)
flags.DEFINE_enum('better', 'higher', ['higher', 'lower'],
                  'Whether a higher figure (a rate) or a lower one (a time) is better.')
flags.DEFINE_integer('rounds', 3, 'Runs of the command on each side.', lower_bound=1)


def _figures(output: str, pattern: re.Pattern) -> dict:
  return {' '.join(m.group(1).replace('|', ' ').split()): float(m.group(2).replace(',', ''))
          for m in pattern.finditer(output)}


def main(argv):
  command = argv[1:]
  if not command:
    sys.exit('error: give the benchmark command after --, e.g. -- tools/bench_lm.py')
  try:
    pattern = re.compile(FLAGS.metric, re.MULTILINE)
  except re.error as e:
    sys.exit(f'error: --metric {FLAGS.metric!r} is not a regular expression: {e}')
  if pattern.groups != 2:
    sys.exit(f'error: --metric has {pattern.groups} groups; expected 2 (label, number)')
  rev = subprocess.run(['git', 'rev-parse', '--verify', '--quiet', FLAGS.old + '^{commit}'],
                       cwd=benchlib.ROOT, capture_output=True, text=True, check=False)
  if rev.returncode:
    sys.exit(f'error: --old {FLAGS.old!r} is not a commit of this repository')
  with tempfile.TemporaryDirectory() as tmp:
    old_tree = os.path.join(tmp, 'old')
    subprocess.run(['git', 'worktree', 'add', '--detach', '--quiet', old_tree,
                    rev.stdout.strip()], cwd=benchlib.ROOT, check=True)
    try:
      trees = {f'old ({FLAGS.old})': old_tree, 'new (this tree)': benchlib.ROOT}

      def run(tree):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=tree)
        out = benchlib.run_process([sys.executable, *command], env=env, cwd=tree)['stdout']
        figures = _figures(out, pattern)
        if not figures:
          sys.exit(f'error: --metric matched nothing in the output of {tree}:\n{out[-2000:]}')
        return figures

      results = benchlib.interleaved(
          {name: (lambda t=tree: run(t)) for name, tree in trees.items()}, FLAGS.rounds,
          on_result=lambda r, name, _: print(f'# round {r + 1}: {name} done', flush=True))
    finally:
      subprocess.run(['git', 'worktree', 'remove', '--force', old_tree], cwd=benchlib.ROOT,
                     check=False)
  old_runs, new_runs = results.values()
  rows = []
  for label in old_runs[0]:
    old = [r[label] for r in old_runs if label in r]
    new = [r[label] for r in new_runs if label in r]
    if not new:
      continue
    speed = (benchlib.median_ratio(new, old) if FLAGS.better == 'higher'
             else benchlib.median_ratio(old, new))
    rows.append((label, f'{benchlib.median(old):,.2f}', f'{benchlib.median(new):,.2f}',
                 f'{speed:.3f}x'))
  print(f'# {" ".join(command)}; {FLAGS.rounds} interleaved rounds; {FLAGS.better} is better; '
        'load average at end {:.2f}'.format(os.getloadavg()[0]))
  print(benchlib.markdown_table(('row', 'old (median)', 'new (median)',
                                 'new speed vs old (median of per-round ratios)'), rows))


if __name__ == '__main__':
  app.run(main)
