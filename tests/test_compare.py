"""``python -m usdh compare`` (usdh/compare.py) on two small hand-made runs of a project: two
commits of a throw-away git + DVC repository, and a folder holding a copy of the first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from usdh.cli import main as cli_main
from usdh.compare import main

DVC = Path(sys.executable).with_name("dvc")
RUNS = [("itq", 16, 0), ("itq", 16, 1), ("usdh", 16, 0), ("usdh", 16, 1)]
VERDICT = ["dataset", "protocol", "metric", "bits", "vs", "difference", "verdict"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _write_run(repo: Path, values: dict, verdict: tuple[float, str], cpu: str) -> None:
    """One run of the pipeline: a metrics file per (method, bits, seed), the verdict, results."""
    for (method, bits, seed), (map_, p_r2) in values.items():
        path = repo / "metrics" / "retrieval" / "cifar10" / "deepbit" / method / str(bits)
        path.mkdir(parents=True, exist_ok=True)
        record = {
            "dataset": "cifar10",
            "protocol": "deepbit",
            "method": method,
            "bits": bits,
            "seed": seed,
            "mAP_tie_aware": map_,
            "precision_r2": p_r2,
            "mAP_at": {"1000": map_},
        }
        (path / f"{seed}.json").write_text(json.dumps(record))
    (repo / "reports").mkdir(exist_ok=True)
    row = ["cifar10", "deepbit", "mAP at the cut-off (tie-aware)", 16, "itq", *verdict]
    pd.DataFrame([row], columns=VERDICT).to_csv(repo / "reports" / "verdict.csv", index=False)
    pd.DataFrame({"method": ["itq"], "cpu_id": [cpu]}).to_csv(
        repo / "reports" / "results.csv", index=False
    )


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict, dict]:
    if not DVC.exists() or shutil.which("git") is None:
        pytest.skip("needs git and dvc")
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    subprocess.run([str(DVC), "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("metrics:\n- metrics/retrieval\n")
    rng = np.random.default_rng(0)
    old = {run: (float(rng.uniform(0.3, 0.6)), float(rng.uniform(0, 0.3))) for run in RUNS}
    new = dict(old)
    new[("usdh", 16, 1)] = (old[("usdh", 16, 1)][0] + 0.0123, old[("usdh", 16, 1)][1])
    new[("usdh", 16, 0)] = (old[("usdh", 16, 0)][0] - 0.0040, old[("usdh", 16, 0)][1] + 0.01)
    _write_run(repo, old, (0.8, "usdh wins"), "GenuineIntel family 6 model 167")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "run A")
    _write_run(repo, new, (-0.1, "usdh not resolved"), "AuthenticAMD family 25 model 17")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "run B")
    return repo, old, new


def _expected(old: dict, new: dict, method: str, which: int) -> tuple[float, float]:
    """The largest (signed) and mean absolute change in points over the method's seeds."""
    d = [(new[r][which] - old[r][which]) * 100 for r in RUNS if r[0] == method]
    return max(d, key=abs), float(np.mean(np.abs(d)))


def _check(out: dict, old: dict, new: dict) -> None:
    changes = pd.DataFrame(out["changes"])
    # ITQ did not change: left out unless --all
    assert set(changes["method"]) == {"usdh"}
    for metric, which in (("mAP_tie_aware", 0), ("precision_r2", 1)):
        row = changes[changes["metric"] == metric].iloc[0]
        largest, mean = _expected(old, new, "usdh", which)
        assert row["largest"] == pytest.approx(largest) and row["mean"] == pytest.approx(mean)
        assert row["runs"] == 2
    row = changes[changes["metric"] == "mAP_tie_aware"].iloc[0]
    assert row["at_seed"] == 1 and row["group"] == "retrieval" and row["bits"] == 16
    (cell,) = out["verdict"]
    assert (cell["verdict_a"], cell["verdict_b"]) == ("usdh wins", "usdh not resolved")
    assert cell["vs"] == "itq" and cell["difference_a"] > 0 > cell["difference_b"]


def test_two_revisions_through_dvc_metrics_diff(project, monkeypatch, capsys):
    repo, old, new = project
    monkeypatch.chdir(repo)
    assert main(["HEAD~1", "HEAD", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    _check(out, old, new)
    assert out["machines"] == {
        "revision HEAD~1": "GenuineIntel family 6 model 167 (1 rows)",
        "revision HEAD": "AuthenticAMD family 25 model 17 (1 rows)",
    }
    # the printed form names both machines and the changed cell
    assert main(["HEAD~1"]) == 0
    text = capsys.readouterr().out
    assert "AuthenticAMD" in text and "usdh not resolved" in text and "(seed 1)" in text
    # the project's command line hands the tool its own arguments
    assert cli_main(["compare", "HEAD~1", "HEAD", "--json"]) == 0
    _check(json.loads(capsys.readouterr().out), old, new)


def test_record_keeps_the_largest_change_per_method(project, monkeypatch, capsys):
    repo, old, new = project
    monkeypatch.chdir(repo)
    args = ["HEAD~1", "HEAD", "--record", "eager", "--machines", "intel", "amd"]
    assert main(args) == 0
    assert main(args) == 0  # the same two sides again: replaced, not appended
    table = pd.read_csv(repo / "reports" / "hardware.csv")
    assert sorted(table["method"]) == ["itq", "usdh"]
    usdh = table[table["method"] == "usdh"].iloc[0]
    # every mAP figure counts: mAP_tie_aware and mAP_at.1000 carry the same change here
    largest, _ = _expected(old, new, "usdh", 0)
    assert usdh["largest"] == pytest.approx(largest, abs=1e-4)
    assert usdh["where"].startswith("deepbit, 16 bits, seed 1, mAP")
    assert (usdh["a_machine"], usdh["b_machine"], usdh["features"]) == ("intel", "amd", "eager")
    assert usdh["verdict_cells_changed"] == 1
    assert table[table["method"] == "itq"].iloc[0]["largest"] == 0


def test_a_folder_against_the_workspace(project, tmp_path, monkeypatch, capsys):
    repo, old, new = project
    folder = tmp_path / "first"
    subprocess.run(["git", "clone", "-q", str(repo), str(folder)], check=True)
    _git(folder, "checkout", "-q", "HEAD~1")
    monkeypatch.chdir(repo)
    assert main([str(folder), "--json"]) == 0
    _check(json.loads(capsys.readouterr().out), old, new)


def test_bad_sides_say_what_is_wrong(project, tmp_path, monkeypatch, capsys):
    repo, _, _ = project
    monkeypatch.chdir(repo)
    assert main(["no-such-revision"]) == 2
    assert "no-such-revision" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "not a checkout of this project" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"dataset": "cifar10", "protocol": "de', "cannot be read (JSONDecodeError"),
        ("", "cannot be read (JSONDecodeError"),
        ("{}", "is empty"),
        ("[]", "JSON list, not an object"),
    ],
)
def test_a_damaged_metrics_file_is_named_not_counted_as_on_one_side(
    project, tmp_path, monkeypatch, capsys, content, said
):
    """DVC skips a metrics file it cannot read; compare showed its run as on one side only."""
    repo, _, _ = project
    relpath = "metrics/retrieval/cifar10/deepbit/usdh/16/1.json"
    (repo / relpath).write_text(content)
    monkeypatch.chdir(repo)
    for args in (["HEAD~1"], [str(_checkout(repo, tmp_path, "HEAD~1"))]):
        assert main([*args, "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"usdh compare: error: {repo / relpath} ") and "\n" not in err
        assert said in err and "dvc repro -s evaluate@usdh-deepbit, or dvc pull" in err


def _checkout(repo: Path, tmp_path: Path, rev: str) -> Path:
    folder = tmp_path / f"checkout-{rev.replace('~', '-')}"
    if not folder.exists():
        subprocess.run(["git", "clone", "-q", str(repo), str(folder)], check=True)
        _git(folder, "checkout", "-q", rev)
    return folder


def test_a_damaged_report_table_is_named(project, monkeypatch, capsys):
    repo, _, _ = project
    monkeypatch.chdir(repo)
    (repo / "reports" / "verdict.csv").write_text("")
    assert main(["HEAD~1"]) == 2
    err = capsys.readouterr().err
    assert "reports/verdict.csv of the workspace cannot be read (EmptyDataError" in err
    (repo / "reports" / "verdict.csv").write_text("dataset,protocol\ncifar10,deepbit\n")
    assert main(["HEAD~1"]) == 2
    err = capsys.readouterr().err
    assert "reports/verdict.csv of the workspace lacks the column(s) metric, bits, vs" in err
    assert "dvc repro -s report" in err


def test_verdict_cells_of_a_setting_are_told_apart_from_the_main_ones():
    """A setting can share the main protocol's dataset and protocol (CIFAR-10 `deepbit` on GIST):
    the group keeps its cells apart; a verdict.csv written before the settings had only the
    retrieval table's cells, and is read so."""
    from usdh.compare import verdict_changes

    row = ["cifar10", "deepbit", "mAP at the cut-off (tie-aware)", 32, "itq"]
    old = pd.DataFrame([[*row, 1.5, "usdh wins"]], columns=VERDICT).to_csv(index=False)
    new = pd.DataFrame(
        [["retrieval", *row, 1.2, "usdh wins"], ["settings", *row, -2.0, "usdh loses"]],
        columns=["group", *VERDICT],
    ).to_csv(index=False)
    changed = verdict_changes(old, new)
    assert len(changed) == 1  # the setting's cell is new; the main one kept its word and sign
    cell = changed.iloc[0]
    assert cell["group"] == "settings" and pd.isna(cell["verdict_a"])
    assert cell["verdict_b"] == "usdh loses"
    assert len(verdict_changes(new, new)) == 0
