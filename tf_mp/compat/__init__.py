"""Bridges to TensorFlow 1: `tf_mp.compat.v1` reads and writes TF1 checkpoints."""

from tf_mp.compat import v1

__all__ = ['v1']
