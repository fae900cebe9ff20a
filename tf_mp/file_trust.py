"""Native code is loaded only from files that only trusted users can change.

`tf.load_op_library` runs the shared object's code in this process, so a
library (or a directory above it) that another user can write is a way for
that user to run code as you. Like OpenSSH's `StrictModes`, refuse a file
whose owner is neither you nor root, or that is world-writable, or that sits
in a world-writable directory without the sticky bit. Group-writable is
allowed, because user-private groups (umask 002) make it common and harmless.
"""

import os
import stat
from typing import Optional


def untrusted_reason(path: str) -> Optional[str]:
  """None when `path` and its directories pass the rule above; else why not.

  Args:
    path: a file that is about to be loaded as native code.

  Returns:
    None, or one line naming the file or directory and what is wrong with it.
  """
  trusted_owners = {0, os.getuid()}
  path = os.path.realpath(path)
  info = os.stat(path)
  if info.st_uid not in trusted_owners:
    return f'{path} is owned by uid {info.st_uid}, not by you or root'
  if info.st_mode & stat.S_IWOTH:
    return f'{path} is writable by every user (mode {stat.filemode(info.st_mode)})'
  directory = os.path.dirname(path)
  while True:
    info = os.stat(directory)
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
      return (f'directory {directory} is writable by every user (mode '
              f'{stat.filemode(info.st_mode)}), so anyone can replace {path}')
    if info.st_uid not in trusted_owners and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
      return (f'directory {directory} is owned by uid {info.st_uid} and writable '
              'by others')
    parent = os.path.dirname(directory)
    if parent == directory:
      return None
    directory = parent
