"""Files tf_mp writes: whole or not at all, and directories checked before any work.

Every small file the library writes (run settings, the tiny LM's run file, TF1
checkpoint state) goes through `write_text_atomic`: the text is written to a
temporary file in the same directory, flushed to disk, and renamed over the
target, so a crash or a full disk leaves either the old file or the new one,
never a truncated one. Output directories are checked with
`check_writable_dir` when a program starts, not at the first save.
"""

import errno
import json
import os
import stat
import tempfile
from typing import Optional

from tf_mp.errors import TfMpError


def check_path(path, what: str) -> str:
  """Returns `path` as a str; TfMpError unless it is a non-empty path."""
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise TfMpError(f'{what} {path!r} is not a path; expected a non-empty '
                    'directory or file name')
  path = os.fspath(path)
  if isinstance(path, bytes):
    path = os.fsdecode(path)
  return path


def check_input_file(path, what: str, expected: str) -> str:
  """Returns `path` as a str; one TfMpError line unless it names an existing regular file.

  Args:
    path: the file to read.
    what: how the message names it, e.g. 'data file'.
    expected: the end of the message, e.g. 'expected a UTF-8 text file'.
  """
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise TfMpError(f'{what} {path!r} is not a path; {expected}')
  if os.path.isdir(path):
    raise TfMpError(f'{what} {path!r} is a directory; {expected}')
  if not os.path.exists(path):
    raise TfMpError(f'{what} {path!r} does not exist; {expected}')
  if not os.path.isfile(path):
    raise TfMpError(f'{what} {path!r} is not a regular file (a device, pipe '
                    f'or socket); {expected}')
  return os.fspath(path)


def broken_link(path: str) -> Optional[str]:
  """Why `path` cannot be created, if a link on the way is broken; else None.

  Of the parts of `path` that do not exist, the first one that is a symbolic
  link (a loop, or one to a missing target) makes every later step fail with
  a misleading "File exists" or "is a file". Returns e.g. "'/a/link' is a
  symbolic link to '/gone', which does not exist".
  """
  part = os.path.abspath(path)
  while not os.path.exists(part):
    if os.path.islink(part):
      try:
        os.stat(part)
      except OSError as e:
        if e.errno == errno.ELOOP:
          return f'{part!r} is a symbolic link loop'
      return f'{part!r} is a symbolic link to {os.readlink(part)!r}, which does not exist'
    parent = os.path.dirname(part)
    if parent == part:
      break
    part = parent
  return None


def refuse_broken_link(path: str, what: str, expected: str = 'expected a directory') -> None:
  """TfMpError, naming the link, when `broken_link(path)` finds one."""
  link = broken_link(path)
  if link:
    raise TfMpError(f'{what} {path!r} cannot be created: {link}; {expected} (create the '
                    'target, or remove the link)')


def check_writable_dir(path, what: str, *, create: bool = True) -> str:
  """Makes sure `path` is a directory this process can create files in.

  The test is real (a file is created and removed): permission bits do not
  tell the whole story (read-only mounts, root, network file systems).

  Args:
    path: the directory.
    what: how the message names it, e.g. 'checkpoint directory'.
    create: create it (and its parents) when missing.

  Returns:
    `path` as a str.

  Raises:
    TfMpError: `path` is not a path, exists and is not a directory, cannot be
      created, or cannot be written.
  """
  path = check_path(path, what)
  if os.path.exists(path) and not os.path.isdir(path):
    raise TfMpError(f'{what} {path!r} exists and is not a directory; expected a '
                    'directory (or a path where one can be created)')
  refuse_broken_link(path, what)
  if not os.path.isdir(path):
    if not create:
      raise TfMpError(f'{what} {path!r} does not exist; expected a directory')
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise TfMpError(f'{what} {path!r} cannot be created ({_reason(e)})') from None
  try:
    fd, probe = tempfile.mkstemp(prefix='.tf_mp_write_test_', dir=path)
    os.close(fd)
    try:
      os.remove(probe)
    except FileNotFoundError:
      pass  # another process's clean-up of the directory took it
  except OSError as e:
    raise TfMpError(f'{what} {path!r} is not writable ({_reason(e)}); expected a '
                    'directory this user can write') from None
  return path


def write_text_atomic(path: str, text: str, what: str = 'file') -> None:
  """Replaces `path` with `text` (UTF-8) in one step: old content or new, never half.

  Raises:
    TfMpError: the file cannot be written (no space, no permission); `path`
      then still holds what it held before.
  """
  directory = os.path.dirname(os.path.abspath(path))
  temp = None
  try:
    fd, temp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.',
                                suffix='.tmp', dir=directory)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
    temp = None
    _fsync_dir(directory)
  except OSError as e:
    raise TfMpError(f'cannot write {what} {path!r} ({_reason(e)}); its previous '
                    'content is unchanged') from None
  finally:
    if temp is not None:
      try:
        os.remove(temp)
      except OSError:
        pass


def write_json_atomic(path: str, value, what: str = 'file') -> None:
  """`write_text_atomic` of `value` as JSON (sorted keys, one line per key)."""
  write_text_atomic(path, json.dumps(value, indent=1, sort_keys=True) + '\n', what)


def read_json(path: str, what: str = 'file'):
  """Reads a JSON file written by `write_json_atomic`.

  Raises:
    TfMpError: the file cannot be read, or is empty, truncated or not JSON.
  """
  try:
    raw = read_regular_file(path)
  except OSError as e:
    raise TfMpError(f'{what} {path!r} cannot be read ({_reason(e)})') from None
  if not raw.strip():
    raise TfMpError(f'{what} {path!r} is empty; expected the JSON tf_mp wrote there')
  try:
    return json.loads(raw.decode('utf-8'))
  except (UnicodeDecodeError, ValueError, RecursionError) as e:  # Recursion: nested too deep.
    raise TfMpError(f'{what} {path!r} is damaged (not valid JSON: {e}); expected '
                    'the JSON tf_mp wrote there') from None


def read_regular_file(path: str) -> bytes:
  """The bytes of `path`; OSError unless it is a regular file (or a link to one).

  A pipe, device or socket in place of a file tf_mp wrote is refused without
  reading from it: a fifo named `checkpoint` blocked the program forever, a
  link to /dev/zero filled the memory. (Opened non-blocking: opening a fifo
  waits for a writer otherwise.)
  """
  fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  with os.fdopen(fd, 'rb') as f:
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
      raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(mode):
      raise OSError(errno.EINVAL, 'not a regular file but a device, pipe or socket')
    return f.read()


def _reason(error: OSError) -> str:
  if error.errno == errno.ENOSPC:
    return 'no space left on device'
  return error.strerror or type(error).__name__


def _fsync_dir(directory: str) -> None:
  """Makes a rename durable; not every platform or file system supports it."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
