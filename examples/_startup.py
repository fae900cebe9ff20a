"""Start-up shared by the example programs.

TensorFlow prints C++ start-up lines (oneDNN, CUDA probing) to stderr while it
loads, some before its logging level is read. The programs keep them off the
screen unless `--verbose` is given, and turn a `tf_mp.TfMpError` into one line
on stderr and exit status 1, without a traceback.
"""

import contextlib
import os
import sys

VERBOSE = any(arg in ('--verbose', '--verbose=true', '--verbose=1')
              for arg in sys.argv[1:])

if not VERBOSE:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


@contextlib.contextmanager
def quiet_stderr():
  """Sends file descriptor 2 to /dev/null inside the block (unless --verbose)."""
  if VERBOSE:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


with quiet_stderr():
  import tensorflow as tf  # pylint: disable=unused-import,g-import-not-at-top
  import tf_mp  # pylint: disable=g-import-not-at-top


def run(main):
  """`absl.app.run(main)`, with `TfMpError` printed as one line and exit 1."""
  from absl import app  # pylint: disable=g-import-not-at-top

  program = os.path.basename(sys.argv[0])

  def guarded_main(argv):
    try:
      return main(argv)
    except tf_mp.TfMpError as e:
      sys.stdout.flush()
      sys.stderr.write(f'{program}: error: {e}\n')
      # 130/143 for an interruption (e.g. tf_mp.peer_wait), else 1.
      sys.exit(getattr(e, 'exit_status', 1))

  app.run(guarded_main)
