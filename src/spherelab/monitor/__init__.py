"""A regime monitor for any PyTorch training loop (docs/monitor.md); the Lightning callback is
in spherelab.monitor.lightning (extra `lightning`)."""

from spherelab.monitor.monitor import RegimeMonitor

__all__ = ["RegimeMonitor"]
