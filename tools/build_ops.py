"""Builds the optional TfMpConcat op (`make ops` runs this).

Builds `tf_mp/ops/_concat_op.so` (CPU kernel) always and
`tf_mp/ops/_concat_op_gpu.so` (CPU + CUDA kernels) when nvcc is found, then
prints what it built and, for the CUDA kernel, why not. Does nothing when the
sources, TensorFlow and the compilers are unchanged since the last build.
Exits non-zero, with the compiler's output, when a build fails.

  python tools/build_ops.py               # CUDA kernel if nvcc is found
  python tools/build_ops.py --cuda=no     # CPU kernel only
  python tools/build_ops.py --force --verbose
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Build into this checkout's tf_mp/ops, whichever tf_mp is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tf_mp import TfMpError  # pylint: disable=g-import-not-at-top
from tf_mp.ops import build as build_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum('cuda', 'auto', ['auto', 'yes', 'no'],
                  'Build the CUDA kernel: auto (when nvcc is found), yes '
                  '(nvcc must be found), no.')
flags.DEFINE_bool('force', False, 'Rebuild even when up to date.')
flags.DEFINE_bool('verbose', False, "Print the compilers' output.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    result = build_lib.build(FLAGS.cuda, force=FLAGS.force,
                             verbose=FLAGS.verbose)
  except TfMpError as e:
    print(f'build_ops: {e}', file=sys.stderr)
    return 1
  print(result.summary())
  return 0


if __name__ == '__main__':
  app.run(main)
