"""Root pytest configuration: ``pytest --benchmark`` runs the benchmarks, plain pytest the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the throughput benchmarks in benchmarks/ (pytest-benchmark) instead of the tests",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Keep benchmarks out of plain test runs, and tests out of benchmark runs."""
    benchmarking = config.getoption("--benchmark")
    path = collection_path.resolve()
    if not benchmarking and path.is_relative_to(ROOT / "benchmarks"):
        return True
    if benchmarking and path.is_relative_to(ROOT / "tests"):
        return True
    return None
