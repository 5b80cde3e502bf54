"""Tables, figures and reports/README.md, built from metrics files (and the deep methods' training
logs), never from models or codes.

``build_report(root, reports_root, context)`` reads every run's metrics under ``root`` where
:mod:`usdh.layout` puts them (``metrics/<group>/<dataset>/<protocol>/<method>/<bits>/<seed>.json``
with its curves), and writes ``reports/results.csv``, ``reports/tables/`` (Markdown and LaTeX) and
``reports/figures/`` (PNG). Each section of the report is a module of this package;
:mod:`usdh.report.build` orders them.
"""

from usdh.report.build import build_report
from usdh.report.reported import REPORTED_CIFAR10
from usdh.report.results import collect_results, summarise

__all__ = ["REPORTED_CIFAR10", "build_report", "collect_results", "summarise"]
