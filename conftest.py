"""Root pytest configuration: ``pytest --benchmark`` runs the benchmarks, plain pytest the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
BENCH_OUT = ROOT / "reports" / "benchmarks"


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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """``pytest --benchmark`` keeps its JSON in reports/benchmarks/ unless told otherwise."""
    if (
        config.getoption("--benchmark")
        and not config.getoption("benchmark_json", None)
        and not config.getoption("benchmark_disable", False)
    ):
        BENCH_OUT.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = BENCH_OUT / "benchmarks.json"


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest-benchmark wrote its JSON, render the Markdown table and the figure beside it."""
    target = config.getoption("benchmark_json", None) if config.getoption("--benchmark") else None
    if target and Path(target).exists() and Path(target).resolve().parent == BENCH_OUT:
        from benchmarks.report import write_benchmark_report

        write_benchmark_report(Path(target), BENCH_OUT)
