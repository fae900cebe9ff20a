"""Data parallelism around model parallelism: strategy layouts and the cluster."""

from tf_mp.devices import parse_device_groups
from tf_mp.distribute.cluster import ClusterTask, parse_tf_config
from tf_mp.distribute.strategies import (STRATEGIES, StrategyLayout,
                                         check_strategy_name, create_strategy)
from tf_mp.errors import WorkerLostError

__all__ = [
    'STRATEGIES', 'ClusterTask', 'StrategyLayout', 'WorkerLostError',
    'check_strategy_name', 'create_strategy', 'parse_device_groups',
    'parse_tf_config',
]
