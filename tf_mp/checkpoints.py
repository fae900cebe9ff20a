"""Training checkpoints: model, Adam state and step, saved so that a crash loses nothing.

A checkpoint holds the model's variables, the optimizer's slots and beta
powers, and the trainer's step counter. The step is also the data position:
step s always trains on `tf_mp.batch_indices(s, ...)`, so restoring the step
restores where the data stream was, and a resumed run is identical to one that
never stopped.

Why a crash never leaves a half-written checkpoint for the next start:
`tf.train.CheckpointManager` writes `ckpt-N.index` / `ckpt-N.data-*` first and
only then rewrites the small `checkpoint` state file (atomically, by rename)
to list ckpt-N. A crash during a save leaves the state file naming the previous
checkpoint, plus a `ckpt-N_temp/` folder that the next start removes. If the
newest listed checkpoint is still unreadable (a damaged disk, a copy cut
short), `restore` says so and falls back to the one before. If the state file
itself is damaged (empty, garbage, unreadable) or missing, the list is
recovered from the `ckpt-N` files present, with a line saying so: existing
checkpoints are never silently ignored and overwritten by a fresh run.

The directory also records the settings that define the run (`settings=`,
e.g. seed, data, batch size) in `run_settings.json`; resuming with different
ones is refused, naming each difference.

Checkpoints are keyed by the object graph (`model.sub_models[k].hidden.kernel`
...), not by devices, so one saved with three devices restores on one device,
or into a mirrored model on 2x3 devices.
"""

import json
import os
import re
import shutil
import stat
import traceback
from typing import Callable, List, Mapping, Optional, Tuple

from google.protobuf import text_format
import numpy as np
import tensorflow as tf
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState  # pylint: disable=g-direct-tensorflow-import

from tf_mp.checks import (boolean, has_attributes, non_finite_variable, non_negative_int,
                          optional_callable, positive_int, trainer_of)
from tf_mp.errors import TfMpError
from tf_mp.files import check_path, check_writable_dir, read_json, read_regular_file
from tf_mp.files import write_json_atomic, write_text_atomic

# Errors that mean "this checkpoint's files are missing or damaged".
# (A truncated data file raises IndexError from the C++ reader.)
_UNREADABLE = (tf.errors.OpError, OSError, IndexError, ValueError, AssertionError)
# Errors of a save: a full disk (ResourceExhaustedError, OSError ENOSPC), a
# directory made read-only or removed meanwhile (PermissionDenied, NotFound).
_SAVE_ERRORS = (tf.errors.OpError, OSError)

STATE_FILE = 'checkpoint'  # TensorFlow's list of checkpoints, newest last.
SETTINGS_FILE = 'run_settings.json'
_INDEX = re.compile(r'^ckpt-(\d+)\.index$')  # the manager's default prefix 'ckpt'
# What a save killed half-way leaves behind (seen with kill -9 during saves):
# the shard folder `ckpt-N_temp/` (with `part-*.tempstate*` files in it), a
# `ckpt-N.data-*` moved out of it before `ckpt-N.index` was written, and
# TensorFlow's temporary copy `checkpoint.tmp<hex>` of the state file; and
# the temporary files of tf_mp's own atomic writes and writability probe.
_LEFTOVER = re.compile(r'^(ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]+|'
                       r'ckpt-\d+\.(index|data-\d+-of-\d+)\.tempstate\d+|'
                       r'\.(checkpoint|run_settings\.json)\..+\.tmp|'
                       r'\.tf_mp_write_test_.+)$')
_DATA = re.compile(r'^ckpt-(\d+)\.data-\d+-of-\d+$')
_MISSING = object()


class TrainingCheckpoints:
  """Saves and restores a `tf_mp.Trainer` (model, optimizer, step) in a directory.

  In a multi-worker run every worker calls `save` (as `tf.distribute`
  requires); only the chief writes to `directory`, the others write to a
  private temporary directory that is deleted again. All workers restore from
  `directory`, which must therefore be shared (the same disk, or a network
  file system) when the workers are on different machines.

  Attributes:
    directory: where the checkpoints are (`ckpt-N.*` and the `checkpoint` file).
    manager: the `tf.train.CheckpointManager` (on a non-chief, one over its
      private directory: a non-chief never lists or sweeps `directory`).
    checkpoint: the `tf.train.Checkpoint` (`model`, `optimizer`, `step`).
    settings: the run settings given (JSON-normalised), or None.
  """

  def __init__(self,
               directory: str,
               trainer,
               *,
               max_to_keep: int = 3,
               is_chief: bool = True,
               worker_index: int = 0,
               settings: Optional[Mapping[str, object]] = None,
               log: Optional[Callable[[str], None]] = None):
    """Opens (creating if needed) a checkpoint directory for `trainer`.

    Opening checks everything that can be known before training: the
    directory can be written, the state file can be read (or the list of
    checkpoints is recovered from the files), and `settings` match those the
    checkpoints were written with. It removes what a killed save left behind.

    Args:
      directory: the checkpoint directory.
      trainer: a `tf_mp.Trainer`; its `model`, `optimizer` and `step` are saved.
      max_to_keep: how many recent checkpoints to keep (at least 2, so that a
        damaged newest one has a predecessor).
      is_chief: False on the non-chief workers of a multi-worker run.
      worker_index: the task index, naming a non-chief's temporary directory.
      settings: what defines the run and must not change on resume, as a
        JSON-able dict, e.g. `{'seed': 0, 'data': tf_mp.data_identity(x, y),
        'batch_size': 64}` (nested dicts are compared key by key). Recorded in
        `run_settings.json` at the first save; None skips the check.
      log: where messages go (e.g. `print`); default silent.

    Raises:
      TfMpError: `directory` is not a directory that can be written; the
        state file is damaged and cannot be replaced; `settings` is not JSON,
        or differs from the recorded settings (each difference named).
    """
    directory = check_path(directory, 'checkpoint directory')
    trainer_of(trainer)
    positive_int('max_to_keep', max_to_keep, minimum=2)
    boolean('is_chief', is_chief)
    non_negative_int('worker_index', worker_index)
    optional_callable('log', log)
    check_writable_dir(directory, 'checkpoint directory')
    self.directory = directory
    self.is_chief = is_chief
    self.settings = _normalise_settings(settings)
    self._settings_recorded = False
    self._log = log or (lambda message: None)
    self._trainer = trainer
    self.checkpoint = tf.train.Checkpoint(model=trainer.model,
                                          optimizer=trainer.optimizer,
                                          step=trainer.step)
    self._write_dir = directory if is_chief else os.path.join(
        directory, f'.worker_{worker_index}_temp')
    listed, problem = read_state(directory)
    on_disk = checkpoints_on_disk(directory)
    if self.settings is not None and (listed or on_disk):
      self._check_settings()  # before anything in the directory is touched
    if is_chief:
      self._remove_leftovers({_key(p) for p in listed or []})
    else:
      shutil.rmtree(self._write_dir, ignore_errors=True)  # a killed save's
    if problem is not None or (listed is None and on_disk):
      listed = self._recover_state(problem, on_disk)
    self._listed = listed or []
    self._on_disk = on_disk
    # A non-chief reads the list only (the chief may be repairing the state
    # file at this moment); its manager sits over its private directory.
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory if is_chief else self._write_dir,
        max_to_keep=max_to_keep, step_counter=trainer.step)

  @property
  def latest(self) -> Optional[str]:
    """The newest checkpoint listed in `directory`, or None."""
    if self.is_chief:
      return self.manager.latest_checkpoint
    return self._listed[-1] if self._listed else None

  def restore(self) -> Optional[str]:
    """Restores the newest readable checkpoint; returns its path or None.

    Tries the listed checkpoints newest first, then any `ckpt-N` files the
    list does not name; an unreadable one is reported through `log` and
    skipped. None when the directory has no checkpoint (the trainer keeps its
    initial state).

    Raises:
      TfMpError: checkpoints exist but none of them can be read, or one
        does not match this model (different widths or a different program).
    """
    listed = list(self.manager.checkpoints) if self.is_chief else self._listed
    unlisted = [p for p in self._on_disk if _key(p) not in {_key(q) for q in listed}]
    candidates = list(reversed(listed)) + list(reversed(unlisted))
    if not candidates:
      return None
    failures = []
    mismatch = None
    # All or nothing: `restore` assigns every value it finds before the match
    # check can fail (e.g. a checkpoint without Adam's state), so a refused or
    # unreadable checkpoint is undone from this copy.
    variables = self._variables()
    before = [v.numpy() for v in variables]
    for path in candidates:
      special = _not_regular(path)
      if special:  # TensorFlow would wait on a fifo forever.
        failures.append(f'{os.path.basename(path)}: {special}')
        self._log(f'Checkpoint {path} is unreadable ({special}); trying the previous one')
        continue
      if _name_based(path):
        # TensorFlow would restore it by global names, with warnings, and fail.
        failures.append(f'{os.path.basename(path)}: a TF1 (name-based) checkpoint, '
                        'for tf_mp.compat.v1.load_tf1_checkpoint')
        self._log(f'Checkpoint {path} is a TF1 (name-based) checkpoint; skipped')
        continue
      try:
        status = self.checkpoint.restore(path)
        try:
          status.assert_existing_objects_matched()
        except AssertionError:
          status.expect_partial()  # We say so in one line; TF needn't in 30.
          raise
      except _UNREADABLE as e:
        _expect_partial(e)
        for var, value in zip(variables, before):
          var.assign(value)
        reason = _first_line(e)
        failures.append(f'{os.path.basename(path)}: {reason}')
        if _is_mismatch(e):
          mismatch = f'checkpoint {path!r} does not match this model ({reason[:200]})'
          break
        self._log(f'Checkpoint {path} is unreadable ({reason[:200]}); trying '
                  'the previous one')
        continue
      if path in unlisted:
        self._log(f'Checkpoint {path} is not in the state file; restored it as '
                  'the newest readable one')
      return path
    if mismatch:
      raise TfMpError(f'{mismatch}; use another directory')
    raise TfMpError(f'no checkpoint in {self.directory!r} can be read: '
                    f'{"; ".join(f[:200] for f in failures)}')

  def _variables(self) -> list:
    """Every variable a checkpoint holds: the model's, Adam's, the step."""
    trainer = self._trainer
    return (list(trainer.model.variables) + list(trainer.optimizer.variables) +
            [trainer.step])

  def save(self, step: Optional[int] = None) -> Optional[str]:
    """Writes a checkpoint for the trainer's current step; returns its path (chief).

    `step` is accepted (and ignored) so that this can be passed as
    `Trainer.fit(on_checkpoint=...)`; the number saved is `trainer.step`.

    Raises:
      TfMpError: the checkpoint cannot be written (a full disk, no permission),
        or a variable holds NaN or Inf (a diverged run: saved, it would rotate
        the good checkpoints out); the previous checkpoints are intact and
        still listed.
    """
    del step  # The trainer's step variable is the source of truth.
    number = int(self._trainer.step.numpy())
    diverged = non_finite_variable(self._variables())
    if diverged:
      raise self._save_error(number, f'variable {diverged!r} holds non-finite '
                             'values, as after a diverged step')
    if not self.is_chief:
      # Every worker takes part in a save; only the chief's copy is kept.
      try:
        self.checkpoint.write(os.path.join(self._write_dir, f'ckpt-{number}'))
      except _SAVE_ERRORS as e:
        raise self._save_error(number, e) from None
      finally:
        shutil.rmtree(self._write_dir, ignore_errors=True)
      return None
    latest = self.manager.latest_checkpoint
    if latest and latest.endswith(f'-{number}'):
      return latest  # Already saved at this step.
    try:
      self._record_settings()
      return self.manager.save(checkpoint_number=number)
    except _SAVE_ERRORS as e:
      self._remove_unlisted(number)
      raise self._save_error(number, e) from None

  # Start-up: leftovers, the state file, the settings.

  def _remove_leftovers(self, listed: set) -> None:
    """Removes what a killed save left: `ckpt-N_temp/`, temporary and orphan files.

    An orphan is a `ckpt-N.data-*` without its `.index` that the state file
    does not list (one it lists stays, for `restore` to report as damaged).
    """
    removed = []
    for name in sorted(os.listdir(self.directory)):
      path = os.path.join(self.directory, name)
      data = _DATA.match(name)
      orphan = data and int(data.group(1)) not in listed and not os.path.exists(
          os.path.join(self.directory, f'ckpt-{data.group(1)}.index'))
      if not (_LEFTOVER.match(name) or orphan):
        continue
      try:
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
      except OSError as e:
        raise TfMpError(f'cannot remove {path!r}, left by an interrupted save '
                        f'({e.strerror})') from None
      removed.append(name)
    if removed:
      self._log(f'Removed what an interrupted save left in {self.directory}: '
                f'{", ".join(removed)}')

  def _recover_state(self, problem: Optional[str], on_disk: List[str]) -> List[str]:
    """The list of checkpoints when the state file is damaged or missing."""
    state = os.path.join(self.directory, STATE_FILE)
    names = ', '.join(os.path.basename(p) for p in on_disk) or 'none'
    if problem is None:
      what = f'{self.directory!r} has checkpoints ({names}) but no state file'
    else:
      what = f'checkpoint state file {state!r} {problem}'
    if not self.is_chief:
      self._log(f'{what}; reading the checkpoints present ({names})')
      return on_disk
    kept = ''
    if problem is not None:
      damaged = state + '.damaged'
      try:
        if os.path.isdir(damaged):
          shutil.rmtree(damaged)
        os.replace(state, damaged)
      except OSError as e:
        raise TfMpError(f'{what}, and it cannot be moved aside ({e.strerror}); '
                        f'remove {state!r} by hand') from None
      kept = f'; the damaged file is kept as {damaged}'
    if on_disk:
      write_text_atomic(state, _state_text(on_disk), 'checkpoint state file')
      self._log(f'{what}; recovered the list from the checkpoints present '
                f'({names}){kept}')
    else:
      self._log(f'{what}; there are no ckpt-N files here, so training starts '
                f'from step 0{kept}')
    return on_disk

  def _check_settings(self) -> None:
    path = os.path.join(self.directory, SETTINGS_FILE)
    if not os.path.exists(path):
      self._log(f'{self.directory} has checkpoints but no {SETTINGS_FILE} (from '
                'a run before settings were recorded); resuming without '
                'comparing settings, which are recorded from the next save')
      return
    saved = read_json(path, 'run settings file')
    if not isinstance(saved, dict):
      raise TfMpError(f'run settings file {path!r} holds {type(saved).__name__}, '
                      'not the settings object tf_mp wrote; restore it, or '
                      'delete it to resume without comparing settings')
    differences = settings_differences(saved, self.settings)
    if differences:
      raise TfMpError(f'checkpoint directory {self.directory!r} holds a run '
                      f'with other settings: {"; ".join(differences)}; resume '
                      'with the same settings or use another directory')

  def _record_settings(self) -> None:
    if self.settings is None or self._settings_recorded:
      return
    write_json_atomic(os.path.join(self.directory, SETTINGS_FILE), self.settings,
                      'run settings file')
    self._settings_recorded = True

  # Saving.

  def _remove_unlisted(self, number: int) -> None:
    """After a failed save: removes ckpt-`number`'s files unless the state lists it."""
    try:
      listed, _ = read_state(self.directory)
      names = os.listdir(self.directory)
    except OSError:
      return  # The directory is gone or is no directory: nothing to remove.
    if any(_key(p) == number for p in listed or []):
      return
    for name in names:
      if name == f'ckpt-{number}_temp' or name.startswith(f'ckpt-{number}.'):
        path = os.path.join(self.directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          try:
            os.remove(path)
          except OSError:
            pass

  def _save_error(self, number: int, error) -> TfMpError:
    """The one line for a failed save: `error` (an exception, or the reason as text)."""
    latest = self.manager.latest_checkpoint if self.is_chief else None
    kept = (f'the previous checkpoint {latest} is intact' if latest else
            'no earlier checkpoint exists')
    if isinstance(error, str):
      reason = error
    else:
      reason = _first_line(error)
      if len(reason) > 200:  # the cause is at the end, after the file name
        reason = '...' + reason[-200:]
      reason = f'{type(error).__name__}: {reason}'
    return TfMpError(f'cannot save checkpoint ckpt-{number} in '
                     f'{self.directory!r} ({reason}); {kept}')


def read_state(directory: str) -> Tuple[Optional[List[str]], Optional[str]]:
  """Reads TensorFlow's `checkpoint` state file in `directory`.

  Returns:
    `(paths, None)`: the listed checkpoint prefixes, oldest first; `(None,
    None)`: there is no state file; `(None, problem)`: it exists but is
    damaged, `problem` saying how ("is empty", "does not parse: ...").
  """
  path = os.path.join(directory, STATE_FILE)
  if not os.path.lexists(path):
    return None, None
  try:
    raw = read_regular_file(path)
  except OSError as e:
    return None, f'cannot be read ({e.strerror})'
  if not raw.strip():
    return None, 'is empty'
  state = CheckpointState()
  try:
    text_format.Parse(raw.decode('utf-8'), state)
  except (UnicodeDecodeError, text_format.ParseError) as e:
    return None, f'does not parse ({_first_line(e)[:100]})'
  if not state.model_checkpoint_path:
    return None, 'names no checkpoint'
  paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  return [p if os.path.isabs(p) else os.path.join(directory, p) for p in paths], None


def checkpoints_on_disk(directory: str) -> List[str]:
  """Prefixes of the `ckpt-N.index` files in `directory`, by N ascending."""
  numbers = sorted(int(m.group(1)) for m in map(_INDEX.match, os.listdir(directory))
                   if m)
  return [os.path.join(directory, f'ckpt-{n}') for n in numbers]


def settings_differences(saved: Mapping, current: Mapping) -> List[str]:
  """`key: <saved> in the checkpoints, <current> now` for each setting that differs.

  Nested dicts are compared key by key (`model.seed`); a key only one side has
  reads `(none)` on the other.
  """
  saved, current = _flatten(saved), _flatten(current)
  lines = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key, _MISSING), current.get(key, _MISSING)
    if old != new:
      lines.append(f'{key}: {_show(old)} in the checkpoints, {_show(new)} now')
  return lines


def _flatten(settings: Mapping, prefix: str = '') -> dict:
  flat = {}
  for key, value in settings.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _show(value) -> str:
  if value is _MISSING:
    return '(none)'
  text = json.dumps(value, sort_keys=True)
  return text if len(text) <= 80 else text[:77] + '...'


def _normalise_settings(settings) -> Optional[dict]:
  """`settings` as JSON would give it back (tuples become lists, keys strings)."""
  if settings is None:
    return None
  if not isinstance(settings, Mapping):
    raise TfMpError(f'settings must be a dict of JSON values, got '
                    f'{type(settings).__name__}')
  try:
    # numpy scalars (a batch size read from an array) as the numbers they are.
    return json.loads(json.dumps(dict(settings), sort_keys=True, allow_nan=False,
                                 default=_numpy_scalar))
  except (TypeError, ValueError) as e:
    raise TfMpError(f'settings must be a dict of JSON values (str, numbers, '
                    f'lists, dicts): {e}') from None


def _numpy_scalar(value):
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'Object of type {type(value).__name__} is not JSON serializable')


def _state_text(prefixes: List[str]) -> str:
  """A `checkpoint` state file listing `prefixes` (oldest first), relative names.

  With timestamps (the index files' times, kept increasing): the manager
  only takes up, and later sweeps, checkpoints whose timestamp is later than
  `last_preserved_timestamp`.
  """
  names = [json.dumps(os.path.basename(p)) for p in prefixes]
  times = []
  for prefix in prefixes:
    stamp = os.path.getmtime(prefix + '.index')
    times.append(max(stamp, times[-1] + 1e-3) if times else stamp)
  return (f'model_checkpoint_path: {names[-1]}\n' +
          ''.join(f'all_model_checkpoint_paths: {n}\n' for n in names) +
          ''.join(f'all_model_checkpoint_timestamps: {t!r}\n' for t in times) +
          f'last_preserved_timestamp: {times[0] - 1.0!r}\n')


def _not_regular(prefix: str) -> Optional[str]:
  """Says which file of checkpoint `prefix` is a fifo, device, socket or directory, if one is."""
  directory, base = os.path.split(prefix)
  for name in sorted(os.listdir(directory)):
    if name == base + '.index' or name.startswith(base + '.data-'):
      try:
        mode = os.stat(os.path.join(directory, name)).st_mode
      except OSError:
        continue  # Missing or a dangling link: TensorFlow's own message says so.
      if not stat.S_ISREG(mode):
        return f'{name} is not a regular file but a directory, device, pipe or socket'
  return None


def _key(prefix: str) -> Optional[int]:
  match = re.search(r'-(\d+)$', prefix)
  return int(match.group(1)) if match else None


def _expect_partial(error: Exception) -> None:
  """Silences TensorFlow's WARNING lines about the values a failed restore left.

  A restore that raises (a shape mismatch) returns no status to call
  `expect_partial()` on, and its bookkeeping, which lives as long as the
  model, logs one line per unmatched value when freed (~30 lines after the
  one-line TfMpError). It is found in the failed call's frames.
  """
  for frame, _ in traceback.walk_tb(error.__traceback__):
    for value in frame.f_locals.values():
      if type(value).__name__ == '_CheckpointRestoreCoordinator':
        value.expect_partial = True


def _name_based(path: str) -> bool:
  """True for a readable TF1 `Saver` checkpoint (no object graph in it)."""
  try:
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  except _UNREADABLE:
    return False  # restore reports it
  return '_CHECKPOINTABLE_OBJECT_GRAPH' not in names


def _first_line(error: Exception) -> str:
  text = str(getattr(error, 'message', None) or error).strip()
  if not text:
    return type(error).__name__
  # TensorFlow wraps an op's message as "{{function_node ...}} <message> [Op:X]".
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text.splitlines()[0])
  return re.sub(r'\s*\[Op:\w+\]$', '', text)


def _is_mismatch(error: Exception) -> bool:
  """A readable checkpoint of something else: missing objects, other shapes."""
  return isinstance(error, AssertionError) or (
      isinstance(error, ValueError) and 'shape' in str(error).lower())


def resume_training(directory: str, trainer, layout=None,
                    log: Callable[[str], None] = print,
                    settings: Optional[Mapping[str, object]] = None
                    ) -> TrainingCheckpoints:
  """Opens `directory` for this process's role and resumes from its newest checkpoint.

  The one set-up the training programs share: the chief or a worker of
  `layout` (a `tf_mp.distribute.StrategyLayout`, or None for one process), the checks of
  `TrainingCheckpoints` (writable, state file, `settings`), a restore, and the
  one-line `Resumed from <path> at step N` when there was something to resume.

  Returns:
    The `TrainingCheckpoints`, for `Trainer.fit(on_checkpoint=...save)`.

  Raises:
    TfMpError: see `TrainingCheckpoints` and its `restore`.
  """
  if layout is not None:
    has_attributes('layout', layout, ('task', 'is_chief'),
                   'a tf_mp.distribute.StrategyLayout or None')
  optional_callable('log', log)
  task = layout.task if layout is not None else None
  checkpoints = TrainingCheckpoints(
      directory, trainer, is_chief=layout.is_chief if layout is not None else True,
      worker_index=task.task_index if task else 0, settings=settings, log=log)
  restored = checkpoints.restore()
  if restored:
    log(f'Resumed from {restored} at step {int(trainer.step.numpy())}')
  return checkpoints
