"""CPU throughput of TfMpConcat, tf.concat and a numpy copy, side by side.

Three float32 inputs [rows, cols] each are joined on the last axis, from
64x64 each (48 KiB out) to 4096x1024 each (48 MiB out), on the CPU. For each
size the three contenders are timed in turn within each repeat, in rotating
order (so machine noise hits all of them alike); a timing is the mean over
enough calls to last --min_time seconds, and the table shows the median over
--repeats timings.
GB/s counts bytes read plus bytes written (2 x output bytes). The numpy column
copies one contiguous array of the output's size (`np.copyto`): the memory
bandwidth reference, not a concat. `custom/tf` is the median over the repeats
of the throughput ratio within a repeat: the two were timed moments apart, so
load from other processes on a busy machine largely cancels out.

  .venv/bin/python -m tf_mp.ops.build && .venv/bin/python tools/bench_concat.py
  python tools/bench_concat.py --repeats 5 --min_time 0.01
"""

import os

import benchlib  # pylint: disable=g-bad-import-order  (first: quiets TensorFlow)
from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tf_mp.ops import concat as concat_lib

FLAGS = flags.FLAGS
flags.DEFINE_integer('repeats', 31, 'Timings per contender and size.', lower_bound=1)
flags.DEFINE_float('min_time', 0.01, 'Seconds each timing lasts at least.')
flags.DEFINE_integer('seed', 0, 'Seed of the input values.')

SHAPES = ((64, 64), (128, 128), (256, 256), (512, 256), (512, 512),
          (1024, 512), (1024, 1024), (2048, 1024), (4096, 1024))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  op = concat_lib.OpLibrary().load(required=True)
  rng = np.random.default_rng(FLAGS.seed)
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, intra-op '
        f'threads {tf.config.threading.get_intra_op_parallelism_threads()} '
        '(0 = one per core); medians of '
        f'{FLAGS.repeats} timings of >= {FLAGS.min_time * 1000:.0f} ms')
  table = [('inputs (3 x)', 'out MiB', 'custom GB/s', 'tf.concat GB/s', 'numpy copy GB/s',
            'custom/tf')]
  with tf.device('/device:CPU:0'):
    for rows, cols in SHAPES:
      values = [tf.constant(rng.normal(size=(rows, cols)), tf.float32)
                for _ in range(3)]
      out_bytes = 3 * rows * cols * 4
      source = np.asarray(rng.normal(size=(rows, 3 * cols)), np.float32)
      target = np.empty_like(source)
      contenders = {
          'custom': lambda v=values: op.tf_mp_concat(v),
          'tf': lambda v=values: tf.concat(v, axis=-1),
          'numpy': lambda: np.copyto(target, source),
      }
      if not np.array_equal(contenders['custom'](), contenders['tf']()):
        raise SystemExit(f'custom op and tf.concat differ at {rows}x{cols}')
      calls = {name: benchlib.calibrate(fn, FLAGS.min_time)
               for name, fn in contenders.items()}
      timings = benchlib.interleaved(
          {name: (lambda fn=fn, n=calls[name]: benchlib.seconds_per_call(fn, n))
           for name, fn in contenders.items()}, FLAGS.repeats)
      rate = {name: 2 * out_bytes / benchlib.median(t) / 1e9
              for name, t in timings.items()}
      ratio = benchlib.median_ratio(timings['tf'], timings['custom'])
      table.append((f'{rows}x{cols}', f'{out_bytes / 2**20:.2f}', f'{rate["custom"]:.2f}',
                    f'{rate["tf"]:.2f}', f'{rate["numpy"]:.2f}', f'{ratio:.2f}'))
      print(f'  {rows}x{cols} done', flush=True)
  print(benchlib.text_table(table, right_align_from=0))


if __name__ == '__main__':
  app.run(main)
