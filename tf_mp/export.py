"""SavedModel export: a serving signature `[None, 128]` float32 -> logits."""

import os
import shutil
import tempfile

import tensorflow as tf

from tf_mp.errors import TfMpError


def check_export_dir(export_dir: str) -> None:
  """Raises TfMpError if `export_dir` exists and is not empty, so nothing is overwritten."""
  if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or
                                     os.listdir(export_dir)):
    raise TfMpError(f'export directory {export_dir!r} already exists and is not '
                    'empty; choose a new path (nothing is overwritten)')
  parent = os.path.dirname(os.path.abspath(export_dir))
  if not os.path.isdir(parent):
    raise TfMpError(f'export directory {export_dir!r}: parent {parent!r} does not '
                    'exist')


def export_saved_model(model: tf.Module, export_dir: str) -> str:
  """Saves `model` as a SavedModel whose `serving_default` maps features to logits.

  The signature takes `features` float32 `[None, input_units]` and returns
  `{'logits': [None, num_classes]}`. Device placements are not saved, so the
  SavedModel loads on any machine. The files are written to a temporary folder
  beside `export_dir` and moved into place only when complete.

  Returns:
    The absolute path of the SavedModel.

  Raises:
    TfMpError: `export_dir` exists and is not empty.
  """
  check_export_dir(export_dir)
  export_dir = os.path.abspath(export_dir)
  spec = tf.TensorSpec([None, model.config.input_units], tf.float32,
                       name='features')

  @tf.function(input_signature=[spec])
  def serve(features):
    return {'logits': model(features)}

  staging = tempfile.mkdtemp(prefix='.export-', dir=os.path.dirname(export_dir))
  try:
    tf.saved_model.save(model, staging, signatures={'serving_default': serve})
    if os.path.isdir(export_dir):
      os.rmdir(export_dir)  # Empty, checked above.
    os.replace(staging, export_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return export_dir
