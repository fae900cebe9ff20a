"""The tests' shared base: seeds, device indices, a subprocess runner, models under a layout.

Seeds are fixed by default, so a failure reproduces on the next run. Set
`TF_MP_FRESH_SEEDS=1` to draw fresh ones; each is printed (run pytest with
`-s` to see them) so that a failure can be replayed with `TF_MP_SEED=<seed>`.
"""

import os
import subprocess
import sys
from typing import Optional, Sequence

import numpy as np

import tf_mp
from tf_mp.devices import device_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEED = 20261128


def draw_seed() -> int:
  """`TF_MP_SEED` or a fixed seed; a fresh, printed one with `TF_MP_FRESH_SEEDS=1`."""
  if os.environ.get('TF_MP_SEED'):
    return int(os.environ['TF_MP_SEED'])
  if os.environ.get('TF_MP_FRESH_SEEDS') == '1':
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f'[tf_mp tests] fresh seed {seed} (replay with TF_MP_SEED={seed})')
    return seed
  return DEFAULT_SEED


def device_index(device: str) -> int:
  """1 for any spelling of CPU:1 (job and task ignored)."""
  return device_key(device)[1]


def run_python(args: Sequence[str], *, timeout: float = 300,
               env: Optional[dict] = None, cwd: str = ROOT,
               **kwargs) -> subprocess.CompletedProcess:
  """Runs `python ARGS` (this interpreter) quietly; returns the completed process."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  full_env.update(env or {})
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=timeout, env=full_env, cwd=cwd, check=False,
                        **kwargs)


def build_model_in(layout, config: Optional[tf_mp.ModelConfig] = None):
  """The document's model on `layout.devices`, its variables under `layout.scope()`."""
  with layout.scope():
    return tf_mp.build_model(layout.devices, config)


# What "the same training" means across layouts, for the strategy tests.
#
# Replicated training sums per-replica gradients (rows 0-31, then 32-63) where a
# single replica sums all 64 rows at once: the same numbers, added in another
# order, equal to about 1e-7 relative. Losses and logits stay that close. Adam,
# though, divides each gradient by its own running magnitude: for the rare weight
# whose gradient is a near-cancelling sum (a bias of a unit that is barely
# active), a 1e-7 difference in that sum can change its update by up to the
# learning rate (1e-3). The same happens when a ReLU input within rounding of
# zero flips for one example: that unit's whole kernel column gets another
# gradient. Seen: 1 of 256 elements of one bias off by 6.8e-5 (once in about ten
# 120-step runs); 123 of 32768 elements of a hidden kernel (one column) off by up
# to 8.4e-4 after 100 steps (once in about twenty runs). So weights are compared
# element by element within `ATOL`, allowing a small fraction `OUTLIERS` of
# elements up to `OUTLIER_ATOL` (two Adam steps). Where the two computations split
# the batch the same way (multi-worker against in-process mirrored), the tests
# demand bit-for-bit equality instead.

ATOL = 1e-5
OUTLIERS = 0.01  # Fraction of a variable's elements allowed beyond ATOL.
OUTLIER_ATOL = 2e-3  # Two Adam steps at learning rate 1e-3.


def assert_weights_match(expected: dict, actual: dict, context: str) -> None:
  """Raises AssertionError unless every variable matches as described above."""
  assert sorted(expected) == sorted(actual), (sorted(expected), sorted(actual), context)
  for name, want in expected.items():
    want, got = np.asarray(want), np.asarray(actual[name])
    assert want.shape == got.shape, (name, want.shape, got.shape, context)
    diff = np.abs(want.astype(np.float64) - got.astype(np.float64))
    beyond = int((diff > ATOL).sum())
    limit = max(1, int(OUTLIERS * diff.size)) if diff.size > 1 else 0
    assert diff.max(initial=0) <= OUTLIER_ATOL and beyond <= limit, (
        f'{name}: {beyond} of {diff.size} elements differ by more than {ATOL} '
        f'(allowed {limit}), max difference {diff.max():.3g} '
        f'(allowed {OUTLIER_ATOL}); {context}')
