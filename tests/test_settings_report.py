"""Across settings: the summary word, the table and the paragraph, checked on hand-made verdicts and
end to end on fake runs of two settings scored by the real evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tests.test_report import CURVES  # the small curves of a 400-image toy database
from usdh.evaluation import evaluate_run
from usdh.io import save_json, save_npy
from usdh.layout import Run
from usdh.report import build_report
from usdh.report.settings import (
    HEADLINE,
    SUMMARIES,
    across_table,
    summary_word,
    verdict_in_words,
)
from usdh.report.verdict import WORDS


def _reference_summary(words: list[str]) -> str:
    """The rule as the docs state it, written out case by case."""
    if not words:
        return "not resolved"
    if set(words) == {"wins"} or set(words) == {"loses"}:
        return "holds everywhere"
    if "wins" in words and "loses" in words:
        return "depends on the setting"
    return "not resolved"


def test_the_summary_word_follows_the_rule_for_every_combination():
    for n in range(4):
        for words in itertools.product(WORDS, repeat=n):
            assert summary_word(list(words)) == _reference_summary(list(words)), words
    assert set(SUMMARIES) == {"holds everywhere", "depends on the setting", "not resolved"}


def _verdict_rows(cells: dict[tuple[str, str, str], dict[tuple[str, int], str]]) -> pd.DataFrame:
    """Verdict rows (usdh minus the opponent) from {setting: {(opponent, bits): word}}."""
    rows = []
    for (group, dataset, protocol), verdicts in cells.items():
        for (other, bits), said in verdicts.items():
            sign = {"wins": 1.0, "loses": -1.0, "not resolved": 0.1}[said]
            for metric in HEADLINE:  # the headline is the cut-off's; the other must be ignored
                rows.append(
                    {
                        "group": group,
                        "dataset": dataset,
                        "protocol": protocol,
                        "metric": metric,
                        "bits": bits,
                        "vs": other,
                        "difference": sign if metric == HEADLINE[0] else -sign,
                        "verdict": f"usdh {said if metric == HEADLINE[0] else 'loses'}",
                    }
                )
    return pd.DataFrame(rows)


def _settings_frame(keys) -> pd.DataFrame:
    return pd.DataFrame(
        [{"group": g, "dataset": d, "protocol": p, "backbone": "b"} for g, d, p in keys]
    )


def test_the_table_and_the_paragraph_say_only_what_holds_everywhere():
    main, other, third = (
        ("retrieval", "cifar10", "deepbit"),
        ("retrieval", "cifar10", "1k-5k-59k"),
        ("settings", "fashion_mnist", "1k-69k"),
    )
    cells = {
        main: {("itq", 16): "wins", ("itq", 32): "wins", ("lsh", 16): "wins", ("sh", 16): "wins"},
        other: {("itq", 16): "wins", ("itq", 32): "wins", ("lsh", 16): "loses", ("sh", 16): "wins"},
        third: {
            ("itq", 16): "wins",
            ("itq", 32): "wins",
            ("lsh", 16): "wins",
            ("sh", 16): "not resolved",
        },
    }
    df = _settings_frame([main, other, third])
    across = across_table(_verdict_rows(cells), df, "usdh")
    assert list(across.columns[:2]) == ["vs", "bits"] and across.columns[-1] == "summary"
    summary = {(r.vs, r.bits): r.summary for r in across.itertuples()}
    assert summary == {
        ("itq", 16): "holds everywhere",
        ("itq", 32): "holds everywhere",
        ("lsh", 16): "depends on the setting",
        ("sh", 16): "not resolved",
    }
    lsh = across[across["vs"] == "lsh"].iloc[0]
    assert lsh["fashion_mnist `1k-69k`, b"] == "wins +1.00"
    assert lsh["cifar10 `1k-5k-59k`, b"] == "loses -1.00"
    (text, blank) = verdict_in_words(across, "usdh", 3)
    assert blank == "" and "across the 3 settings" in text
    assert "usdh beats itq in every setting and at every code length" in text
    assert "lsh the verdict depends on the setting" in text
    assert "sh it is not resolved" in text and "beats itq, " not in text
    # a setting without the opponent's run leaves that row unresolved, whatever the rest says
    del cells[third][("itq", 32)]
    across = across_table(_verdict_rows(cells), df, "usdh")
    row = across[(across["vs"] == "itq") & (across["bits"] == 32)].iloc[0]
    assert row["fashion_mnist `1k-69k`, b"] == "-" and row["summary"] == "not resolved"
    assert "beats" not in verdict_in_words(across, "usdh", 3)[0]


def _fake_run(root, group, dataset, protocol, method, bits, seed, noise, labels, split, rng):
    run = Run(group, dataset, protocol, method, bits, seed, root)
    centers = np.random.default_rng(bits).integers(0, 2, (10, bits)).astype(bool)
    for part in ("query", "database"):
        lab = labels[split[part]]
        codes = centers[lab] ^ (rng.random((len(lab), bits)) < noise)
        save_npy(run.codes_dir / f"{part}.npy", np.packbits(codes, axis=1))
    record = {
        "dataset": dataset,
        "protocol": protocol,
        "backbone": "gist" if group == "settings" else "efficientnet_lite0",
        "method": method,
        "bits": bits,
        "seed": seed,
        "source": dataset,
    }
    evaluate_run(labels, split, run, topk=50, curves=CURVES, radius=2, record=record)
    save_json(run.fit_record, {"n_train": 360, "fit_seconds": 0.5, "params": {}})


@pytest.fixture
def two_settings(tmp_path):
    """usdh far better than itq on the retrieval protocol, far worse in the setting."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    split = {"query": np.arange(60), "database": np.arange(60, 400)}
    noise = {("retrieval", "usdh"): 0.05, ("retrieval", "itq"): 0.4}
    noise |= {("settings", "usdh"): 0.4, ("settings", "itq"): 0.05}
    for (group, method), level in noise.items():
        # the same dataset and protocol through other features: told apart by the group
        for bits, seed in itertools.product((16, 32), (0, 1, 2)):
            _fake_run(
                tmp_path, group, "cifar10", "deepbit", method, bits, seed, level, labels, split, rng
            )
    return tmp_path


def test_the_report_judges_every_setting_and_says_where_the_verdict_turns(two_settings):
    out = two_settings / "reports"
    context = {"backbone": "efficientnet_lite0", "protocol": "deepbit", "target": "usdh"}
    build_report(two_settings, out, context)
    results = pd.read_csv(out / "results.csv")
    assert results.columns[0] == "group"
    assert set(results["group"]) == {"retrieval", "settings"} and len(results) == 24
    assert set(results[results["group"] == "settings"]["backbone"]) == {"gist"}
    verdict = pd.read_csv(out / "verdict.csv")
    words = verdict[verdict["metric"] == HEADLINE[0]].groupby("group")["verdict"].agg(set)
    assert words["retrieval"] == {"usdh wins"} and words["settings"] == {"usdh loses"}
    readme = (out / "README.md").read_text()
    first = readme.split("\n\n")[2]  # after the title and the introduction
    assert first.startswith("In words, as far as it holds across the 2 settings")
    assert "depends on the setting" in first and "beats" not in first
    assert "## Across settings" in readme and (out / "figures" / "across_settings.png").is_file()
    table = (out / "tables" / "across_settings.md").read_text()
    assert "cifar10 `deepbit`, gist" in table and "cifar10 `deepbit`, efficientnet_lite0" in table
    assert "depends on the setting" in table
