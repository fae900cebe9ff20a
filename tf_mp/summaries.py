"""TensorBoard scalars without the tensorboard package.

`tf.summary.scalar` lives in the tensorboard package, which TensorFlow 2.21
no longer installs. A scalar summary is only `tf.summary.write` with the
scalars plugin's metadata, which is what this writes; TensorBoard reads it as
usual.
"""

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tf_mp.checkpoints import _first_line  # pylint: disable=protected-access
from tf_mp.errors import TfMpError

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))


def write_scalar(name: str, value, step: int) -> None:
  """Writes one float32 scalar to the default summary writer (see `tf.summary.create_file_writer`)."""
  tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                   metadata=_SCALAR_METADATA.SerializeToString())


def summary_error(logdir: str, step: int, error: Exception) -> TfMpError:
  """The one line for a summary write that failed (a full disk, a removed directory)."""
  reason = _first_line(error)
  if len(reason) > 200:  # The cause is at the end, after the file name.
    reason = '...' + reason[-200:]
  return TfMpError(f'cannot write TensorBoard summaries to {logdir!r} at step '
                   f'{step} ({type(error).__name__}: {reason}); training stopped '
                   'there, checkpoints already saved are intact')
