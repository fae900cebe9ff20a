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
checkpoint. If the newest listed checkpoint is still unreadable (a damaged
disk, a copy cut short), `restore` says so and falls back to the one before.

Checkpoints are keyed by the object graph (`model.sub_models[k].hidden.kernel`
...), not by devices, so one saved with three devices restores on one device,
or into a mirrored model on 2x3 devices.
"""

import os
import shutil
from typing import Callable, Optional

import tensorflow as tf

from tf_mp.errors import TfMpError

# Errors that mean "this checkpoint's files are missing or damaged".
# (A truncated data file raises IndexError from the C++ reader.)
_UNREADABLE = (tf.errors.OpError, OSError, IndexError, ValueError, AssertionError)


class TrainingCheckpoints:
  """Saves and restores a `tf_mp.Trainer` (model, optimizer, step) in a directory.

  In a multi-worker run every worker calls `save` (as `tf.distribute`
  requires); only the chief writes to `directory`, the others write to a
  private temporary directory that is deleted again. All workers restore from
  `directory`, which must therefore be shared (the same disk, or a network
  file system) when the workers are on different machines.

  Attributes:
    directory: where the checkpoints are (`ckpt-N.*` and the `checkpoint` file).
    manager: the `tf.train.CheckpointManager`.
    checkpoint: the `tf.train.Checkpoint` (`model`, `optimizer`, `step`).
  """

  def __init__(self,
               directory: str,
               trainer,
               *,
               max_to_keep: int = 3,
               is_chief: bool = True,
               worker_index: int = 0,
               log: Optional[Callable[[str], None]] = None):
    """Opens (creating if needed) a checkpoint directory for `trainer`.

    Args:
      directory: the checkpoint directory.
      trainer: a `tf_mp.Trainer`; its `model`, `optimizer` and `step` are saved.
      max_to_keep: how many recent checkpoints to keep (at least 2, so that a
        damaged newest one has a predecessor).
      is_chief: False on the non-chief workers of a multi-worker run.
      worker_index: the task index, naming a non-chief's temporary directory.
      log: where messages go (e.g. `print`); default silent.

    Raises:
      TfMpError: `directory` is not a directory that can be written.
    """
    if not isinstance(directory, str) or not directory:
      raise TfMpError(f'checkpoint directory {directory!r} is not a path')
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 2:
      raise TfMpError(f'max_to_keep must be an integer >= 2, got {max_to_keep!r}')
    if os.path.exists(directory) and not os.path.isdir(directory):
      raise TfMpError(f'checkpoint directory {directory!r} exists and is not a '
                      'directory')
    self.directory = directory
    self.is_chief = is_chief
    self._log = log or (lambda message: None)
    self._trainer = trainer
    self.checkpoint = tf.train.Checkpoint(model=trainer.model,
                                          optimizer=trainer.optimizer,
                                          step=trainer.step)
    write_dir = directory if is_chief else os.path.join(
        directory, f'.worker_{worker_index}_temp')
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      raise TfMpError(f'checkpoint directory {directory!r} cannot be created '
                      f'({e.strerror})') from None
    self._write_dir = write_dir
    # On a non-chief this only reads: it never saves through the manager.
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=max_to_keep,
        step_counter=trainer.step)

  @property
  def latest(self) -> Optional[str]:
    """The newest checkpoint listed in `directory`, or None."""
    return self.manager.latest_checkpoint

  def restore(self) -> Optional[str]:
    """Restores the newest readable checkpoint; returns its path or None.

    Tries the listed checkpoints newest first; an unreadable one is reported
    through `log` and skipped. None when the directory has no checkpoint (the
    trainer keeps its initial state).

    Raises:
      TfMpError: checkpoints are listed but none of them can be read, or one
        does not match this model (different widths or a different program).
    """
    candidates = list(reversed(self.manager.checkpoints))
    if not candidates:
      return None
    failures = []
    for path in candidates:
      try:
        status = self.checkpoint.restore(path)
        status.assert_existing_objects_matched()
      except _UNREADABLE as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        failures.append(f'{os.path.basename(path)}: {reason}')
        if _is_mismatch(e):
          raise TfMpError(f'checkpoint {path!r} does not match this model '
                          f'({reason[:200]}); use another --checkpoint_dir') from None
        self._log(f'Checkpoint {path} is unreadable ({reason[:200]}); trying '
                  'the previous one')
        continue
      return path
    raise TfMpError(f'no checkpoint in {self.directory!r} can be read: '
                    f'{"; ".join(f[:200] for f in failures)}')

  def save(self, step: Optional[int] = None) -> Optional[str]:
    """Writes a checkpoint for the trainer's current step; returns its path (chief).

    `step` is accepted (and ignored) so that this can be passed as
    `Trainer.fit(on_checkpoint=...)`; the number saved is `trainer.step`.
    """
    del step  # The trainer's step variable is the source of truth.
    number = int(self._trainer.step.numpy())
    if not self.is_chief:
      # Every worker takes part in a save; only the chief's copy is kept.
      self.checkpoint.write(os.path.join(self._write_dir, f'ckpt-{number}'))
      shutil.rmtree(self._write_dir, ignore_errors=True)
      return None
    latest = self.manager.latest_checkpoint
    if latest and latest.endswith(f'-{number}'):
      return latest  # Already saved at this step.
    return self.manager.save(checkpoint_number=number)


def _is_mismatch(error: Exception) -> bool:
  """A readable checkpoint of something else: missing objects, other shapes."""
  return isinstance(error, AssertionError) or (
      isinstance(error, ValueError) and 'shape' in str(error).lower())


def resume_training(directory: str, trainer, layout=None,
                    log: Callable[[str], None] = print) -> TrainingCheckpoints:
  """Opens `directory` for this process's role and resumes from its newest checkpoint.

  The one set-up the training programs share: the chief or a worker of
  `layout` (a `tf_mp.distribute.StrategyLayout`, or None for one process), a restore, and
  the one-line `Resumed from <path> at step N` when there was something to
  resume.

  Returns:
    The `TrainingCheckpoints`, for `Trainer.fit(on_checkpoint=...save)`.
  """
  task = layout.task if layout is not None else None
  checkpoints = TrainingCheckpoints(
      directory, trainer, is_chief=layout.is_chief if layout is not None else True,
      worker_index=task.task_index if task else 0, log=log)
  restored = checkpoints.restore()
  if restored:
    log(f'Resumed from {restored} at step {int(trainer.step.numpy())}')
  return checkpoints

