"""Test set-up: six logical CPU devices, made once before TensorFlow starts.

Six covers every layout the tests use: the document's three sub-models on
cpu:0-2, and two replica groups of three for the mirrored strategy.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tf_mp  # pylint: disable=g-import-not-at-top

NUM_LOGICAL_CPUS = 6

tf_mp.ensure_logical_cpus(NUM_LOGICAL_CPUS)
