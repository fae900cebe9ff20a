"""The version of tf_mp, read by `setup.py` without importing TensorFlow."""

__version__ = '0.1.0'
