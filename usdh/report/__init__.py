"""Tables, figures and reports/README.md, built from metrics files only (never models or codes).

``build_report(metrics_root, reports_root, context)`` reads every
``metrics/<dataset>/<method>/<bits>/<seed>.json`` with its curves, and writes
``reports/results.csv``, ``reports/tables/`` (Markdown and LaTeX) and ``reports/figures/`` (PNG).
"""

from usdh.report.build import REPORTED_CIFAR10, build_report, collect_results, summarise

__all__ = ["REPORTED_CIFAR10", "build_report", "collect_results", "summarise"]
