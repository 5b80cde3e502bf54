"""Tables, figures and reports/README.md, built from metrics files (and the deep methods' training
logs), never from models or codes.

``build_report(root, reports_root, context)`` reads every run's metrics under ``root`` where
:mod:`usdh.layout` puts them (``metrics/<group>/<dataset>/<protocol>/<method>/<bits>/<seed>.json``
with its curves), and writes ``reports/results.csv``, ``reports/tables/`` (Markdown and LaTeX) and
``reports/figures/`` (PNG).
"""

from usdh.report.build import REPORTED_CIFAR10, build_report, collect_results, summarise

__all__ = ["REPORTED_CIFAR10", "build_report", "collect_results", "summarise"]
