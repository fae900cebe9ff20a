"""TF1 `Saver` checkpoints of the document's program, loaded into and written from tf_mp.

A `tf.compat.v1.train.Saver` checkpoint stores each variable under its graph
name. The document's program, as transcribed in `tools/reference/tf1_program.py`,
names its variables as `build_model` does (`sub_model_k/{hidden,output}/{kernel,
bias}`, `head/{kernel,bias}`), and `tf_mp.Adam` names its state as TF1's
`AdamOptimizer` does (`<var>/Adam`, `<var>/Adam_1`, `beta1_power`,
`beta2_power`), so both directions are a match by name, whatever devices the
model sits on.

Loading is all or nothing: every name, shape and dtype is checked and every
value is read before the first variable is assigned.
"""

import json
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from tf_mp import checks
from tf_mp.adam import variable_name
from tf_mp.checkpoints import checkpoints_on_disk
from tf_mp.errors import TfMpError
from tf_mp.files import write_text_atomic

# Entries TF1's AdamOptimizer adds to a checkpoint beside the model variables.
_OPTIMIZER_SUFFIXES = ('/Adam', '/Adam_1')
_OPTIMIZER_NAMES = ('beta1_power', 'beta2_power')
# A training-step counter; the document's program has none, `save_tf1_checkpoint`
# writes `Trainer.step` under this name so that a round trip keeps it.
_STEP_NAME = 'global_step'
# What TensorFlow's checkpoint reader raises for a damaged file (a short read
# surfaces as IndexError).
_READ_ERRORS = (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError)


def _is_optimizer_entry(name: str) -> bool:
  return (name in _OPTIMIZER_NAMES or name == _STEP_NAME or
          name.endswith(_OPTIMIZER_SUFFIXES))


def _first_line(error: Exception) -> str:
  text = str(getattr(error, 'message', None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _named_variables(model: tf.Module) -> Dict[str, tf.Variable]:
  """Checkpoint name -> variable, for every variable of `model`."""
  named = {}
  for var in model.variables:
    name = variable_name(var)
    if name in named:
      raise TfMpError(f'model has two variables named {name!r}; expected unique '
                      'names (build one model with build_model)')
    named[name] = var
  return named


def _optimizer_variables(model: tf.Module, trainer) -> Dict[str, tf.Variable]:
  """TF1 name -> optimizer variable of `trainer` (empty when `trainer` is None)."""
  if trainer is None:
    return {}
  checks.trainer_of(trainer, model)
  return dict(trainer.optimizer.slots())


def _checkpoint_prefix(path) -> str:
  """The Saver prefix of `path` (a prefix, or a directory with a `checkpoint` file)."""
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise TfMpError(f'checkpoint path {path!r} is not a path; expected a Saver '
                    'prefix such as "ckpt/model" or a directory')
  path = os.fspath(path)
  prefix = path
  if tf.io.gfile.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise TfMpError(f'checkpoint directory {path!r} has no "checkpoint" file '
                      'naming a checkpoint; expected a Saver prefix or a '
                      'directory a Saver wrote to')
  if not tf.io.gfile.exists(prefix + '.index'):
    raise TfMpError(f'TF1 checkpoint {path!r} not found: {prefix}.index does '
                    'not exist; expected the prefix a Saver wrote (the path '
                    'without .index / .data-*)')
  return prefix


def _format(name: str, shape) -> str:
  return f'{name} {list(shape)}'


def _differs(name: str, shape, dtype, want_shape, want_dtype, owner: str) -> str:
  return (f'{name} is {list(shape)} {dtype.name} in the checkpoint, '
          f'{list(want_shape)} {want_dtype.name} in the {owner}')


def _mismatches(names: Dict[str, tf.Variable], shapes: dict,
                dtypes: dict) -> Tuple[List[str], List[str]]:
  """The entries of `names` missing from the checkpoint, and those that differ."""
  missing, misshaped = [], []
  for name, var in sorted(names.items()):
    if name not in shapes:
      missing.append(_format(name, var.shape))
      continue
    want_dtype = var.dtype.base_dtype
    got_dtype = tf.as_dtype(dtypes[name])
    if list(shapes[name]) != var.shape.as_list() or got_dtype != want_dtype:
      misshaped.append(_differs(name, shapes[name], got_dtype,
                                var.shape.as_list(), want_dtype, 'model'))
  return missing, misshaped


def load_tf1_checkpoint(model: tf.Module, path, trainer=None) -> List[str]:
  """Loads a TF1 `Saver` checkpoint of the document's program into `model`.

  The model may sit on any devices (each value is assigned where its variable
  lives). Optimizer state in the checkpoint (`<var>/Adam`, `<var>/Adam_1`,
  `beta1_power`, `beta2_power`, and `global_step` when present) goes into
  `trainer.optimizer` (and `trainer.step`) when `trainer` is given and is
  skipped otherwise; a checkpoint without optimizer state leaves the trainer's
  optimizer as it is. The document's program saves no step counter: to continue
  its batch sequence, set `trainer.step.assign(steps_done)`.

  Nothing is assigned unless everything matches and every value was read.

  Args:
    model: a model from `build_model` (any module whose variable names match).
    path: the Saver prefix (e.g. `"ckpt/model-1000"`), or a directory whose
      `checkpoint` file names one.
    trainer: optional `Trainer(model)` whose Adam state is loaded.

  Returns:
    The checkpoint names that were loaded, sorted.

  Raises:
    TfMpError: the path is missing or the checkpoint unreadable or corrupt; or
      model variables are missing from the checkpoint, the checkpoint has
      variables the model lacks, or shapes or dtypes differ (each listed by
      name and shape, all in one message); or, with `trainer`, the
      checkpoint has only part of the Adam state; or a float value is NaN or
      Inf, or `global_step` is negative (every such entry named). The model
      and the trainer are then unchanged.
  """
  _check_model_and_trainer(model, trainer)
  prefix = _checkpoint_prefix(path)
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
  except _READ_ERRORS as e:
    raise TfMpError(f'TF1 checkpoint {path!r} is unreadable or corrupt '
                    f'({type(e).__name__}: {_first_line(e)})') from None

  model_vars = _named_variables(model)
  optimizer_vars = _optimizer_variables(model, trainer)
  missing, misshaped = _mismatches(model_vars, shapes, dtypes)
  unexpected = [_format(n, shapes[n]) for n in sorted(shapes)
                if n not in model_vars and not _is_optimizer_entry(n)]

  targets = dict(model_vars)
  if trainer is not None:
    present = [n for n in shapes if _is_optimizer_entry(n) and n != _STEP_NAME]
    if present:
      opt_missing, opt_misshaped = _mismatches(optimizer_vars, shapes, dtypes)
      missing += opt_missing
      misshaped += opt_misshaped
      unexpected += [_format(n, shapes[n]) for n in sorted(present)
                     if n not in optimizer_vars]
      targets.update(optimizer_vars)
    if _STEP_NAME in shapes:
      step_dtype = tf.as_dtype(dtypes[_STEP_NAME])
      if list(shapes[_STEP_NAME]) != [] or not step_dtype.is_integer:
        misshaped.append(_differs(_STEP_NAME, shapes[_STEP_NAME], step_dtype,
                                  [], tf.int64, 'trainer'))
      else:
        targets[_STEP_NAME] = trainer.step

  problems = []
  for label, items in (('missing from the checkpoint', missing),
                       ('not in the model', unexpected),
                       ('wrong shape or dtype', misshaped)):
    if items:
      problems.append(f'{label}: ' + ', '.join(items))
  if problems:
    raise TfMpError(f'TF1 checkpoint {path!r} does not match the model; '
                    + '; '.join(problems) + '. Nothing was loaded')

  values = {}
  try:
    for name in sorted(targets):
      values[name] = np.asarray(reader.get_tensor(name))
  except _READ_ERRORS as e:
    raise TfMpError(f'TF1 checkpoint {path!r} is corrupt: reading {name!r} failed '
                    f'({type(e).__name__}: {_first_line(e)}). Nothing was '
                    'loaded') from None
  bad = _bad_values(values)
  if bad:
    raise TfMpError(f'TF1 checkpoint {path!r} holds values that cannot be '
                    f'trained from: {"; ".join(bad)}. Nothing was loaded')
  for name, value in values.items():
    var = targets[name]
    var.assign(tf.constant(value, dtype=var.dtype.base_dtype))
  return sorted(values)


def _bad_values(values: Dict[str, np.ndarray]) -> List[str]:
  """Non-finite floats (a diverged run's weights) and a negative step, by name."""
  bad = []
  for name in sorted(values):
    value = values[name]
    if name == _STEP_NAME:
      if value < 0:
        bad.append(f'{_STEP_NAME} is {int(value)}; expected an integer >= 0')
    elif np.issubdtype(value.dtype, np.floating):
      finite = np.isfinite(value)
      if not finite.all():
        first = value[~finite].flat[0]
        bad.append(f'{name} has {int((~finite).sum())} non-finite values '
                   f'(e.g. {first}); expected finite numbers')
  return bad


def _write_checkpoint_state(prefix: str) -> None:
  """Writes the `checkpoint` file a Saver keeps beside its checkpoints.

  It is a text `CheckpointState` proto naming the latest prefix, so that
  `tf.train.latest_checkpoint(directory)` finds it (TensorFlow's own writer,
  `update_checkpoint_state`, is deprecated).
  """
  quoted = json.dumps(prefix, ensure_ascii=False)  # text-proto string escaping.
  state = (f'model_checkpoint_path: {quoted}\n'
           f'all_model_checkpoint_paths: {quoted}\n')
  path = os.path.join(os.path.dirname(prefix), 'checkpoint')
  write_text_atomic(path, state, 'checkpoint state file')


def _check_model_and_trainer(model, trainer) -> None:
  """TfMpError unless `model` is a module and `trainer` None or its Trainer."""
  checks.module('model', model)
  if trainer is not None:
    checks.trainer_of(trainer, model)


def save_tf1_checkpoint(model: tf.Module, path, trainer=None) -> str:
  """Writes `model` (and `trainer`'s Adam state) as a TF1 `Saver` checkpoint.

  The document's TF1 program restores it with `saver.restore(sess, path)`
  (`tools/reference/tf1_program.py --restore PATH`), and
  `load_tf1_checkpoint` reads it back. With a trainer, `trainer.step` is saved
  as `global_step` (TF1's Saver ignores entries its graph does not have).

  Args:
    model: a model from `build_model`.
    path: the checkpoint prefix, e.g. `"ckpt/model"`; writes `path.index`,
      `path.data-00000-of-00001` and a `checkpoint` file in its directory.
    trainer: optional `Trainer(model)` whose Adam state is saved too.

  Returns:
    The prefix written (absolute).

  Raises:
    TfMpError: `path` is not a path, names a directory, already exists
      (nothing is overwritten) or lies in a directory of tf_mp training
      checkpoints; a value is not finite (nothing is written); or it cannot
      be written.
  """
  _check_model_and_trainer(model, trainer)
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise TfMpError(f'checkpoint path {path!r} is not a path; expected a prefix '
                    'such as "ckpt/model"')
  prefix = os.path.abspath(os.fspath(path))
  if os.path.isdir(prefix):
    raise TfMpError(f'checkpoint path {path!r} is a directory; expected a '
                    f'prefix inside it, such as "{os.fspath(path)}/model"')
  if os.path.lexists(prefix + '.index'):
    raise TfMpError(f'TF1 checkpoint {path!r} already exists; choose a new prefix '
                    '(nothing is overwritten)')
  if os.path.isdir(os.path.dirname(prefix)) and checkpoints_on_disk(os.path.dirname(prefix)):
    raise TfMpError(f'{os.path.dirname(prefix)!r} holds tf_mp training checkpoints '
                    '(ckpt-N), whose state file a TF1 checkpoint would replace; '
                    'choose another directory')
  named = _named_variables(model)
  if trainer is not None:
    named.update(_optimizer_variables(model, trainer))
    named[_STEP_NAME] = trainer.step
  names = sorted(named)
  # What load_tf1_checkpoint would refuse is not written.
  bad = _bad_values({n: named[n].numpy() for n in names})
  if bad:
    raise TfMpError(f'cannot write TF1 checkpoint {path!r}: {"; ".join(bad)}. '
                    'Nothing was written')
  try:
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with tf.device('/device:CPU:0'):
      tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                        shape_and_slices=[''] * len(names),
                        tensors=[named[n].read_value() for n in names])
    _write_checkpoint_state(prefix)
  except (tf.errors.OpError, OSError) as e:
    raise TfMpError(f'cannot write TF1 checkpoint {path!r} '
                    f'({type(e).__name__}: {_first_line(e)})') from None
  return prefix
