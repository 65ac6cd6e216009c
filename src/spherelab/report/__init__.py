"""A sweep's report: its data read from files (data), figures (matplotlib, no torch), and one
self-contained HTML page (html, write). Nothing here imports torch."""

from spherelab.report.data import Sweep, load_sweep
from spherelab.report.write import write_report

__all__ = ["Sweep", "load_sweep", "write_report"]
