"""Reports read from TensorFlow: placement, pipeline balance, per-device time."""

from tf_mp.reports.balance import BalanceReport, StageBalance, balance_report
from tf_mp.reports.device_time import DeviceTime, DeviceTimeReport, device_time_report
from tf_mp.reports.placement import (PartPlacement, PlacementReport,
                                     pipeline_placement, placement_report)
from tf_mp.reports.table import format_table

__all__ = [
    'BalanceReport', 'DeviceTime', 'DeviceTimeReport', 'PartPlacement',
    'PlacementReport', 'StageBalance', 'balance_report', 'device_time_report',
    'format_table', 'pipeline_placement', 'placement_report',
]
