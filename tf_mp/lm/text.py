"""Text for the tiny language model: files, the built-in corpus, the character vocabulary, windows.

The built-in corpus needs nothing downloaded: it is the docstrings (module,
class and function) of a fixed list of Python standard-library modules, read
with `ast` from the installation's own sources (`sysconfig`'s `stdlib` path),
in list order, joined by blank lines, with characters outside printable ASCII
dropped. It is deterministic for a given Python version (348,723 characters,
96 distinct, on Python 3.11.7).
"""

import ast
import dataclasses
import os
import string
import sysconfig
from typing import Optional, Sequence, Tuple

import numpy as np

from tf_mp import checks
from tf_mp.checks import integer, positive_int
from tf_mp.errors import TfMpError
from tf_mp.files import check_input_file

CORPUS_MODULES = (
    'argparse', 'textwrap', 'difflib', 'functools', 'inspect', 'typing',
    'dataclasses', 'subprocess', 'pathlib', 'shutil', 'threading', 'random',
    'statistics', 'fractions', 'calendar', 'heapq', 'bisect', 'string', 'enum',
    'collections', 'json', 'logging', 'unittest.case', 'tarfile', 'zipfile',
    'configparser', 'csv', 'doctest', 'pydoc', 'pickle')

_KEPT = set(string.printable) - set('\t\r\x0b\x0c')


def _module_source(stdlib: str, module: str) -> Optional[str]:
  base = os.path.join(stdlib, *module.split('.'))
  for path in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(path):
      with open(path, encoding='utf-8') as f:
        return f.read()
  return None


def builtin_corpus(modules: Sequence[str] = CORPUS_MODULES) -> str:
  """The docstrings of `modules` from this Python's standard library (see above).

  Raises:
    TfMpError: none of the modules' sources could be found (a Python
      installed without its `.py` files).
  """
  stdlib = sysconfig.get_paths()['stdlib']
  docs = []
  for module in modules:
    source = _module_source(stdlib, module)
    if source is None:
      continue
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                           ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc:
          docs.append(doc.replace('\t', '    '))
  text = ''.join(c for c in '\n\n'.join(docs) if c in _KEPT)
  if not text:
    raise TfMpError(f'no standard-library sources found under {stdlib!r}; '
                    'pass a text file instead (--text PATH)')
  return text


def load_text(path: str) -> str:
  """Reads a UTF-8 text file.

  Raises:
    TfMpError: the path is not a path, names a directory or something other
      than a regular file, is missing or unreadable, or the file is empty (or
      only whitespace) or binary (contains a NUL byte or is not valid UTF-8).
  """
  expected = 'expected a UTF-8 text file'
  path = check_input_file(path, 'text file', expected)
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise TfMpError(f'text file {path!r} cannot be read ({e.strerror}); '
                    f'{expected}') from None
  if not data.strip():
    raise TfMpError(f'text file {path!r} is empty; expected UTF-8 text to train on')
  nul = data.find(b'\x00')
  if nul >= 0:
    raise TfMpError(f'text file {path!r} is binary (a NUL byte at offset {nul}); '
                    'expected UTF-8 text')
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise TfMpError(f'text file {path!r} is not UTF-8 text (byte 0x{data[e.start]:02x} '
                    f'at offset {e.start}); expected UTF-8 text') from None


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """The characters of a text, sorted; id i is `chars[i]`."""
  chars: str

  @classmethod
  def from_text(cls, text: str) -> 'CharVocab':
    if not text:
      raise TfMpError('text is empty; expected at least one character')
    return cls(''.join(sorted(set(text))))

  @property
  def size(self) -> int:
    return len(self.chars)

  def encode(self, text: str, what: str = 'text') -> np.ndarray:
    """int32 ids of `text`'s characters.

    Raises:
      TfMpError: a character is not in the vocabulary (named, with `what`).
    """
    index = {c: i for i, c in enumerate(self.chars)}
    missing = sorted(set(text) - set(index))
    if missing:
      raise TfMpError(f'{what} has characters not in the vocabulary: '
                      f'{"".join(missing)[:20]!r}; expected only characters of '
                      'the training text')
    return np.array([index[c] for c in text], dtype=np.int32)

  def decode(self, ids) -> str:
    """The text of integer `ids`, each in `[0, size)`; TfMpError otherwise."""
    if not np.size(ids):
      return ''
    ids = checks.numeric_array('ids', ids, integer_values=True)
    bad = ids[(ids < 0) | (ids >= self.size)]
    if bad.size:
      raise TfMpError(f'ids contain {bad.flat[0]}; expected character ids in '
                      f'[0, {self.size})')
    return ''.join(self.chars[int(i)] for i in ids.ravel())


def split_ids(ids: np.ndarray, context: int,
              validation_fraction: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
  """Splits ids into training (the first 90%) and validation (the rest).

  Raises:
    TfMpError: either part is shorter than `context + 1` characters (a window
      of `context` inputs and their next characters).
  """
  n_val = int(round(len(ids) * validation_fraction))
  train, val = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
  shortest = min(len(train), len(val))
  if shortest < context + 1:
    raise TfMpError(
        f'context {context} is longer than the text allows: {len(ids)} characters '
        f'split into {len(train)} for training and {len(val)} for validation; '
        f'each needs at least context + 1 = {context + 1} (use a longer text '
        'or a shorter --context)')
  return train, val


def windows(ids: np.ndarray, context: int, stride: int,
            *, seed: Optional[int] = None,
            max_windows: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Input and target windows: `x[i] = ids[s:s+context]`, `y[i] = ids[s+1:s+1+context]`.

  Windows start every `stride` characters; with `seed` they are shuffled
  (deterministically), and at most `max_windows` are kept.

  Returns:
    int32 `x`, `y`, both `[n, context]`.
  """
  starts = np.arange(0, len(ids) - context, stride)
  if seed is not None:
    starts = np.random.default_rng(seed).permutation(starts)
  if max_windows is not None:
    starts = starts[:max_windows]
  offsets = starts[:, None] + np.arange(context)[None, :]
  return ids[offsets].astype(np.int32), ids[offsets + 1].astype(np.int32)


def unigram_entropy(ids: np.ndarray) -> float:
  """Entropy in nats of the character frequencies of `ids` (integers >= 0, at least one)."""
  ids = checks.numeric_array('ids', ids, integer_values=True).ravel()
  if not ids.size or ids.min() < 0:
    raise TfMpError(f'ids must be a non-empty array of character ids >= 0, got '
                    f'{checks.short_repr(ids)}')
  counts = np.bincount(ids).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


@dataclasses.dataclass
class Corpus:
  """A text ready for training: vocabulary, training and validation windows."""
  vocab: CharVocab
  train_ids: np.ndarray
  val_ids: np.ndarray
  train_x: np.ndarray
  train_y: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  source: str


def prepare_corpus(text: str, context: int, *, source: str = 'text',
                   stride: Optional[int] = None, seed: int = 0,
                   max_val_windows: int = 64) -> Corpus:
  """Vocabulary, a 90/10 split and windows for `text`.

  Training windows start every `stride` characters (default `context // 8`)
  and are shuffled by `seed`; validation windows do not overlap (at most
  `max_val_windows`).

  Raises:
    TfMpError: the text is empty or too short for `context`.
  """
  checks.text(source, text, 'a str (decode bytes first)')
  if not text:
    raise TfMpError(f'{source} is empty; expected text to train on')
  positive_int('context', context)
  integer('seed', seed)
  positive_int('max_val_windows', max_val_windows)
  if stride is not None:
    positive_int('stride', stride)
  vocab = CharVocab.from_text(text)
  ids = vocab.encode(text)
  train_ids, val_ids = split_ids(ids, context)
  stride = stride or max(1, context // 8)
  train_x, train_y = windows(train_ids, context, stride, seed=seed)
  val_x, val_y = windows(val_ids, context, context, max_windows=max_val_windows)
  return Corpus(vocab, train_ids, val_ids, train_x, train_y, val_x, val_y, source)
