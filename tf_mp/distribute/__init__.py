"""Data parallelism around model parallelism: strategy layouts and the cluster.

Names load on first use, so that `tf_mp.distribute.cluster` (TF_CONFIG parsing,
free loopback ports) can serve a launcher without importing TensorFlow.
"""

from tf_mp.lazy import import_submodule

_HOMES = {
    'STRATEGIES': 'strategies', 'StrategyLayout': 'strategies',
    'check_strategy_name': 'strategies', 'create_strategy': 'strategies',
    'ClusterTask': 'cluster', 'parse_tf_config': 'cluster',
    'free_loopback_ports': 'cluster',
}

__all__ = sorted(list(_HOMES) + ['WorkerLostError', 'parse_device_groups'])


def __getattr__(name):
  if name == 'WorkerLostError':
    from tf_mp.errors import WorkerLostError  # pylint: disable=g-import-not-at-top
    return WorkerLostError
  if name == 'parse_device_groups':
    from tf_mp.devices import parse_device_groups  # pylint: disable=g-import-not-at-top
    return parse_device_groups
  if name in _HOMES:
    return getattr(import_submodule(__name__, _HOMES[name]), name)
  return import_submodule(__name__, name)


def __dir__():
  return sorted(set(globals()) | set(__all__))
