"""The package version, defined once (setup.py reads this file without importing TensorFlow)."""

__version__ = '0.2.0'
