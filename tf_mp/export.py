"""SavedModel export: a serving signature `[None, 128]` float32 -> logits."""

import os
import shutil
import tempfile

import tensorflow as tf

from tf_mp.checks import non_finite_variable
from tf_mp.errors import TfMpError, error_line
from tf_mp.files import check_path, check_writable_dir, refuse_broken_link


def check_export_dir(export_dir: str) -> str:
  """Checks, before training, that a SavedModel can be written to `export_dir`.

  `export_dir` must not exist, or be an empty directory, so nothing is
  overwritten. Its parent is created when missing, and must be writable: the
  export is written beside `export_dir` and renamed into place.

  Returns:
    `export_dir` as an absolute path.

  Raises:
    TfMpError: `export_dir` is not a path, is a file, is a directory that is
      not empty, or its parent cannot be created or written.
  """
  path = check_path(export_dir, 'export directory')
  refuse_broken_link(path, 'export directory', 'expected a new path or an empty directory')
  if os.path.islink(path):  # To an empty directory: the export goes there (the link stays).
    path = os.path.realpath(path)
  if os.path.isdir(path) and os.listdir(path):
    raise TfMpError(f'export directory {export_dir!r} already exists and is not '
                    'empty; choose a new path (nothing is overwritten)')
  if os.path.lexists(path) and not os.path.isdir(path):
    raise TfMpError(f'export directory {export_dir!r} is a file; expected a new '
                    'path or an empty directory (nothing is overwritten)')
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  if parent == path:
    raise TfMpError(f'export directory {export_dir!r} is the root directory; '
                    'expected a new path inside a writable directory')
  try:
    check_writable_dir(parent, 'directory')
  except TfMpError as e:
    raise TfMpError(f'export directory {export_dir!r} cannot be written: '
                    f'{e}') from None
  return path


def export_saved_model(model: tf.Module, export_dir: str) -> str:
  """Saves `model` as a SavedModel whose `serving_default` maps features to logits.

  The signature takes `features` float32 `[None, input_units]` and returns
  `{'logits': [None, num_classes]}`. Device placements are not saved, so the
  SavedModel loads on any machine. The files are written to a temporary folder
  beside `export_dir` and moved into place only when complete.

  Returns:
    The absolute path of the SavedModel.

  Raises:
    TfMpError: `model` is not a tf_mp model, holds non-finite weights, cannot
      be called on its config's features, `export_dir` fails
      `check_export_dir`, or the SavedModel cannot be written (a full disk):
      nothing is left at `export_dir` then.
  """
  config = getattr(model, 'config', None)
  if not isinstance(model, tf.Module) or not hasattr(config, 'input_units'):
    raise TfMpError(f'cannot export {type(model).__name__}; expected a model '
                    'from tf_mp.build_model (a tf.Module with a config)')
  diverged = non_finite_variable(model.variables)
  if diverged:
    raise TfMpError(f'cannot export {type(model).__name__}: variable {diverged!r} holds '
                    'non-finite values (a diverged run?); expected finite weights. '
                    'Nothing was exported')
  export_dir = check_export_dir(export_dir)
  spec = tf.TensorSpec([None, config.input_units], tf.float32, name='features')

  @tf.function(input_signature=[spec])
  def serve(features):
    return {'logits': model(features)}

  staging = None
  try:
    staging = tempfile.mkdtemp(prefix='.export-', dir=os.path.dirname(export_dir))
    tf.saved_model.save(model, staging, signatures={'serving_default': serve})
    if os.path.isdir(export_dir):
      os.rmdir(export_dir)  # Empty, checked above.
    os.replace(staging, export_dir)
    staging = None
  except (tf.errors.OpError, OSError) as e:
    text = str(getattr(e, 'message', None) or e).strip()
    reason = text.splitlines()[0][:200] if text else ''
    raise TfMpError(f'cannot write the SavedModel to {export_dir!r} '
                    f'({type(e).__name__}: {reason}); nothing was left '
                    'there') from None
  except TfMpError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Tracing the signature calls the model: a model that does not take its
    # config's features fails there, inside TensorFlow's tracing.
    raise TfMpError(f'cannot export {type(model).__name__}: calling it on features '
                    f'float32 [None, {config.input_units}] failed ({error_line(e)}); '
                    'nothing was written') from e
  finally:
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)
  return export_dir
