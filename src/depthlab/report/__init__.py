"""Figures (matplotlib, Agg) and one self-contained HTML report per store.

``write_report(out_dir)`` reads ``out_dir/depthlab.db`` and writes ``out_dir/report.html`` plus
``out_dir/figures/*.png``.
"""

from . import figures
from .build import theory_for, varying_keys, write_report

__all__ = ["figures", "theory_for", "varying_keys", "write_report"]
