"""The docs are tests: every ```python block of README.md and docs/*.md runs.

Each Markdown file's blocks run in one fresh Python process of their own (one
TensorFlow start-up per file, not per block, to keep this quick on two cores;
six logical CPU devices are made first, the most any block makes alone),
with `TF_CPP_MIN_LOG_LEVEL=3` and this checkout's `tf_mp` on the path. Inside
it each block gets a fresh namespace and a fresh, empty working directory, so
a block that leans on an import or a file of the block before it fails here.
A block whose first line is `# needs: <what>` (a GPU, a second machine) is
skipped with that reason. A block repeated verbatim in another page (the
Chinese page mirrors the README's quick start) runs once, where it first
appears; `test_chinese_page_in_step` holds the copies equal.

Also checked: the README's length, that shell blocks name `.venv/bin/python`
rather than a bare `python`, and that relative links point at files.
"""

import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
CHINESE = os.path.join(ROOT, 'docs', 'README.zh.md')
MAX_README_LINES = 250
TIMEOUT_S = 300  # per file; the whole set takes well under a minute when idle
# Pages other work items write; a link to one is fine before it is merged.
WRITTEN_ELSEWHERE = {'docs/keras.md', 'docs/security.md'}

FENCE = re.compile(r'^```([\w.+-]*)[^\n]*\n(.*?)^```[ \t]*$', re.M | re.S)

# Runs the blocks of one file: argv[1] is a JSON list of [label, code]; prints
# one JSON line per block on the real stdout after a marker.
RUNNER = r'''
import json, os, sys, tempfile, time, traceback, io, contextlib
blocks = json.load(open(sys.argv[1], encoding='utf-8'))
# Blocks share this process, and logical devices can only be made before
# TensorFlow starts: make the most any block asks for (the mirrored examples'
# two groups of three) first, as a fresh process running that block would.
import tf_mp
tf_mp.ensure_logical_cpus(6)
results = []
for label, code in blocks:
  workdir = tempfile.mkdtemp(prefix='block_')
  os.chdir(workdir)
  # A file of its own, so that tracebacks and AutoGraph can read the source.
  path = os.path.join(workdir, label.replace('/', '_').replace(':', '_') + '.py')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(code)
  out = io.StringIO()
  start = time.perf_counter()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
      exec(compile(code, path, 'exec'), {'__name__': '__main__', '__file__': path})
    ok, output = True, out.getvalue()
  except BaseException:  # SystemExit included: a block must not exit
    ok, output = False, out.getvalue() + traceback.format_exc()
  results.append({'label': label, 'ok': ok, 'output': output,
                  'seconds': round(time.perf_counter() - start, 1)})
print('@@RESULTS@@' + json.dumps(results), flush=True)
'''


def doc_files():
  return [README] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def rel(path):
  return os.path.relpath(path, ROOT)


def fenced_blocks(path):
  """(language, first line number of the code, code) of each fenced block."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  for match in FENCE.finditer(text):
    line = text.count('\n', 0, match.start(2)) + 1
    yield match.group(1).lower(), line, match.group(2)


def python_blocks():
  """Every ```python block: (file, line, code, skip reason or None)."""
  seen = {}
  blocks = []
  for path in doc_files():
    for language, line, code in fenced_blocks(path):
      if language not in ('python', 'py'):
        continue
      first = code.split('\n', 1)[0].strip()
      reason = None
      if first.startswith('# needs:'):
        reason = 'needs ' + first[len('# needs:'):].strip()
      elif code in seen:
        reason = f'same block as {seen[code]}, run there'
      else:
        seen[code] = f'{rel(path)}:{line}'
      blocks.append((rel(path), line, code, reason))
  return blocks


BLOCKS = python_blocks()


def _run_file(name, blocks):
  """Runs one file's blocks in a fresh process; returns {label: (ok, output)}."""
  with tempfile.TemporaryDirectory(prefix='docs_') as tmp:
    spec = os.path.join(tmp, 'blocks.json')
    with open(spec, 'w', encoding='utf-8') as f:
      json.dump([[f'{name}:{line}', code] for _, line, code, _ in blocks], f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
               PYTHONPATH=os.pathsep.join(
                   [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    try:
      proc = subprocess.run([sys.executable, '-c', RUNNER, spec], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      return {f'{name}:{line}': (False, f'{name} timed out after {TIMEOUT_S} s')
              for _, line, _, _ in blocks}
  marker = proc.stdout.rfind('@@RESULTS@@')
  if marker < 0:
    why = f'{name}: the runner exited {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}'
    return {f'{name}:{line}': (False, why) for _, line, _, _ in blocks}
  results = json.loads(proc.stdout[marker + len('@@RESULTS@@'):])
  return {r['label']: (r['ok'], f"({r['seconds']} s)\n{r['output']}") for r in results}


@pytest.fixture(scope='module')
def block_results():
  """Runs all files at once (a few processes overlap their TensorFlow start-up)."""
  by_file = {}
  for block in BLOCKS:
    if block[3] is None:
      by_file.setdefault(block[0], []).append(block)
  results = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    for outcome in pool.map(lambda item: _run_file(*item), by_file.items()):
      results.update(outcome)
  return results


@pytest.mark.parametrize('name,line,code,reason', BLOCKS,
                         ids=[f'{b[0]}:{b[1]}' for b in BLOCKS])
def test_python_block_runs(block_results, name, line, code, reason):
  if reason:
    pytest.skip(reason)
  ok, output = block_results[f'{name}:{line}']
  assert ok, f'the block at {name}:{line} failed:\n{output[-4000:]}'


def test_there_are_blocks_to_run():
  runnable = [b for b in BLOCKS if b[3] is None]
  assert len({b[0] for b in runnable}) >= 5, [b[:2] for b in BLOCKS]


def test_every_python_fence_is_found():
  """An indented or oddly closed ```python block would otherwise go untested."""
  for path in doc_files():
    with open(path, encoding='utf-8') as f:
      opened = len(re.findall(r'```(?:python|py)\b', f.read()))
    found = sum(1 for language, _, _ in fenced_blocks(path) if language in ('python', 'py'))
    assert opened == found, f'{rel(path)}: {opened} python fences, {found} extracted blocks'


def test_readme_is_short():
  with open(README, encoding='utf-8') as f:
    lines = f.read().count('\n')
  assert lines <= MAX_README_LINES, (
      f'README.md has {lines} lines; expected at most {MAX_README_LINES}: move detail into docs/')


def test_shell_blocks_use_the_venv():
  """`python` in a shell block must be `.venv/bin/python` (what `make tutorial` made)."""
  bare = re.compile(r'(^|[\s;&|(])(python3?)(\s)', re.M)
  offenders = []
  for path in doc_files():
    for language, line, code in fenced_blocks(path):
      if language not in ('sh', 'bash', 'shell', 'console'):
        continue
      for number, text in enumerate(code.split('\n')):
        command = text.split('#', 1)[0]
        if bare.search(command):
          offenders.append(f'{rel(path)}:{line + number}: {text.strip()}')
  assert not offenders, 'bare python in shell blocks:\n' + '\n'.join(offenders)


def test_relative_links_point_at_files():
  link = re.compile(r'\]\(([^)#\s]+)(#[^)]*)?\)')
  missing = []
  pending = []
  for path in doc_files():
    with open(path, encoding='utf-8') as f:
      text = f.read()
    for target, _ in link.findall(text):
      if re.match(r'[a-z]+:', target):
        continue  # http:, https:, mailto:
      full = os.path.normpath(os.path.join(os.path.dirname(path), target))
      if os.path.exists(full):
        continue
      (pending if rel(full) in WRITTEN_ELSEWHERE else missing).append(
          f'{rel(path)} -> {target}')
  assert not missing, 'links to missing files:\n' + '\n'.join(missing)
  if pending:
    pytest.skip('pages written by other work, not here yet: ' + ', '.join(sorted(set(pending))))


def test_chinese_page_in_step():
  """The Chinese page's code blocks are the README's quick start, verbatim."""
  english = {code for language, _, code in fenced_blocks(README)}
  chinese = list(fenced_blocks(CHINESE))
  assert chinese, 'docs/README.zh.md has no code blocks'
  drifted = [f'docs/README.zh.md:{line}' for language, line, code in chinese
             if language != 'text' and code not in english]
  assert not drifted, ('code blocks of the Chinese page that are not in README.md '
                       '(keep them in step): ' + ', '.join(drifted))
