"""Training, evaluation, sampling and checkpoints for the tiny language model.

Training is `tf_mp.Trainer`'s (TF1-exact Adam, `tf.gradients` so each
shard's backward ops run on the shard's device, many steps per `tf.function`
call); `TinyLM` declares what a batch is. Features are int32 windows
`[n, time]` of character ids and labels the same windows shifted by one; the
loss is the mean sparse softmax cross-entropy over every position, in nats.
"""

import dataclasses
import os
import weakref

import numpy as np
import tensorflow as tf

from tf_mp.checkpoints import TrainingCheckpoints
from tf_mp.checks import (finite_number, instance_of, non_negative_int, positive_int,
                          text)
from tf_mp.errors import TfMpError
from tf_mp.files import check_path, read_json, write_json_atomic
from tf_mp.lm.model import TinyLM
from tf_mp.lm.text import CharVocab
from tf_mp.trainer import Trainer


class LMTrainer(Trainer):
  """`tf_mp.Trainer` for a `TinyLM`, plus `evaluate`.

  The model declares its data (`TinyLM.input_spec`, `label_spec`,
  `check_data`): batches are windows of character ids, so the training step is
  the `Trainer`'s own.

  `fit(x, y, steps=...)` takes `x`, `y` int32 `[n, time]` (from
  `tf_mp.lm.prepare_corpus`); step s uses windows
  `tf_mp.batch_indices(s, batch_size, n)`, so resuming at step s sees what an
  uninterrupted run would.
  """

  def __init__(self, model: TinyLM, learning_rate: float = 0.001, **kwargs):
    super().__init__(model, learning_rate, **kwargs)
    spec = tf.TensorSpec([None, None], tf.int32)
    self._eval_loss = tf.function(self._eval_loss_fn, input_signature=[spec, spec])

  def _eval_loss_fn(self, x, y):
    return self.compute_loss(x, y)

  def evaluate(self, x, y, batch_size: int = 32) -> float:
    """Mean cross-entropy (nats per character) over all windows of `x`, `y`."""
    batch_size = positive_int('evaluate: batch_size', batch_size)
    x, y = self.check_data(x, y, 'validation data')
    total = 0.0
    for start in range(0, len(x), batch_size):
      xb, yb = x[start:start + batch_size], y[start:start + batch_size]
      total += float(self._eval_loss(tf.constant(xb), tf.constant(yb))) * len(xb)
    return total / len(x)


def generate(model: TinyLM, vocab: CharVocab, prompt: str, length: int,
             *, temperature: float = 1.0, seed: int = 0) -> str:
  """Samples `length` characters that follow `prompt`.

  The model reads at most the last `context` characters. Each step feeds a
  fixed `[1, context]` window (padded on the right, which the causal mask
  makes invisible) so one traced function serves every step.

  Args:
    model: a trained `TinyLM`.
    vocab: the vocabulary it was trained with.
    prompt: non-empty text made of vocabulary characters.
    length: characters to generate (>= 1).
    temperature: > 0 samples from softmax(logits / temperature); 0 takes the
      most likely character.
    seed: seeds the sampling.

  Returns:
    The `length` generated characters (without the prompt).

  Raises:
    TfMpError: an empty prompt, a prompt character outside the vocabulary, a
      negative temperature or a non-positive length.
  """
  instance_of('model', model, TinyLM, 'a tf_mp.lm.TinyLM')
  check_sampling(vocab, prompt, length, temperature)
  non_negative_int('seed', seed)  # numpy's generator takes no negative seed
  if vocab.size != model.config.vocab_size:
    raise TfMpError(f'vocabulary has {vocab.size} characters but the model has '
                    f'{model.config.vocab_size} logits')
  ids = list(vocab.encode(prompt, 'prompt'))
  context = model.config.context
  step = _next_logits_fn(model)
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(length):
    window = ids[-context:]
    padded = np.zeros([1, context], np.int32)
    padded[0, :len(window)] = window
    logits = step(tf.constant(padded), tf.constant(len(window) - 1)).numpy()
    if temperature == 0:
      choice = int(np.argmax(logits))
    else:
      # Shifted before dividing: with a temperature near zero (1e-320) the
      # quotients overflow to inf, and inf - inf made the probabilities NaN.
      logits = logits.astype(np.float64)
      p = np.exp((logits - logits.max()) / temperature)
      choice = int(rng.choice(len(p), p=p / p.sum()))
    ids.append(choice)
    out.append(choice)
  return vocab.decode(out)


def check_sampling(vocab: CharVocab, prompt: str, length: int,
                   temperature: float) -> None:
  """Raises TfMpError for a request `generate` cannot serve (see there)."""
  instance_of('vocab', vocab, CharVocab, 'a tf_mp.lm.CharVocab (corpus.vocab)')
  positive_int('sample length', length)
  finite_number('temperature', temperature, minimum=0)
  text('prompt', prompt)
  if not prompt:
    raise TfMpError('prompt is empty; expected at least one character')
  vocab.encode(prompt, 'prompt')


# One traced step function per model, kept off the module so checkpoints and
# `trainable_variables` never see it.
_NEXT_LOGITS = weakref.WeakKeyDictionary()


def _next_logits_fn(model: TinyLM):
  """`ids [1, context] -> logits [vocab]` at `position`, traced once per model."""
  fn = _NEXT_LOGITS.get(model)
  if fn is None:
    @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32),
                                  tf.TensorSpec([], tf.int32)])
    def fn(ids, position):
      return model(ids)[0, position]
    _NEXT_LOGITS[model] = fn
  return fn


RUN_FILE = 'tiny_lm.json'


class LMCheckpoints:
  """Checkpoints and resume for an `LMTrainer`: `tf_mp.TrainingCheckpoints` plus the run's identity.

  `tf_mp.TrainingCheckpoints` (a `tf.train.CheckpointManager`) saves the
  model's variables (each shard is restored onto the device it is built on),
  Adam's slots and beta powers, and the step counter. `tiny_lm.json` beside
  the checkpoints records the config, T and the vocabulary, so a resume with
  another text or another size is refused instead of mixing weights (a
  character's id depends on the text's vocabulary).
  """

  def __init__(self, directory: str, trainer: LMTrainer, vocab: CharVocab,
               max_to_keep: int = 3, log=None):
    """Opens `directory` for `trainer` (see `tf_mp.TrainingCheckpoints`).

    `log` gets `tf_mp.TrainingCheckpoints`' messages (a damaged state file recovered).

    Raises:
      TfMpError: `trainer` is not an `LMTrainer`, `vocab` not a `CharVocab`,
        the directory holds a run with another config, T or vocabulary, or
        it cannot be used (see `tf_mp.TrainingCheckpoints`).
    """
    instance_of('trainer', trainer, LMTrainer, 'a tf_mp.lm.LMTrainer')
    instance_of('vocab', vocab, CharVocab, 'a tf_mp.lm.CharVocab (corpus.vocab)')
    self.directory = check_path(directory, 'checkpoint directory')
    self.trainer = trainer
    model = trainer.model
    self.run = {'config': dataclasses.asdict(model.config),
                'tensor_parallel': model.tensor_parallel, 'vocab': vocab.chars}
    self._log = log
    # Before anything is touched, and before a `save` could rewrite the run file.
    self._run_file_found = self._check_run()
    self.checkpoints = TrainingCheckpoints(directory, trainer,
                                           max_to_keep=max_to_keep, log=log)

  def restore_or_initialize(self) -> int:
    """Restores the latest readable checkpoint if any; returns the step it resumes at.

    Raises:
      TfMpError: the checkpoints do not fit the model.
    """
    self.checkpoints.restore()
    step = int(self.trainer.step.numpy())
    if step and not self._run_file_found and self._log is not None:
      # The shapes matched, but a vocabulary of the same size cannot be told apart.
      self._log(f'{self.directory} has checkpoints but no {RUN_FILE}; resuming '
                'without comparing the config, T and vocabulary, which are '
                'recorded from the next save')
    return step

  def _check_run(self) -> bool:
    """TfMpError if `tiny_lm.json` records another config, T or vocabulary; whether it exists."""
    path = os.path.join(self.directory, RUN_FILE)
    if not os.path.exists(path):
      return False
    saved = read_json(path, 'tiny LM run file')
    if not isinstance(saved, dict):
      raise TfMpError(f'tiny LM run file {path!r} holds {type(saved).__name__}, '
                      'not the object tf_mp wrote; use another --logdir')
    for key in ('config', 'tensor_parallel', 'vocab'):
      if saved.get(key) != self.run[key]:
        raise TfMpError(f'{self.directory!r} holds a run with {key} '
                        f'{saved.get(key)!r}; this run has {self.run[key]!r} '
                        '(use another --logdir or the same settings)')
    return True

  def save(self) -> str:
    """Writes `tiny_lm.json` and a checkpoint at the trainer's step; returns its path."""
    # Atomic: a crash or a full disk mid-write must not leave a truncated run
    # file that makes the valid checkpoints beside it unusable.
    write_json_atomic(os.path.join(self.directory, RUN_FILE), self.run,
                      'tiny LM run file')
    return self.checkpoints.save()
