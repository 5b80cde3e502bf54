"""The machine fingerprint (usdh/fingerprint.py): this machine's digests against the committed row
for the same machine kind and software, where there is one, and the table's round trip."""

from __future__ import annotations

import csv

import pytest
import yaml

from tests.closure import ROOT
from tests.data_fixtures import OXFORD_TAR
from usdh import fingerprint


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD_TAR.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_this_machine_computes_what_its_row_says(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    digests = fingerprint.compute(params, OXFORD_TAR)
    assert set(digests) == set(fingerprint.DIGESTS)
    assert all(len(d) == 16 for d in digests.values())
    key = fingerprint.machine_key()
    row = fingerprint.known_row(key, ROOT / fingerprint.MACHINES)
    if row is None:
        pytest.skip(
            f"{fingerprint.MACHINES} has no row for {key['cpu_id']} with this software; "
            "`python -m usdh fingerprint --write` adds one"
        )
    assert {k: row[k] for k in fingerprint.DIGESTS} == digests, (
        f"this {key['cpu_id']} computes other bits than the row recorded {row['recorded']}: "
        "the code changed the numbers (or the row is stale)"
    )


def test_the_table_round_trips_and_matches_on_the_key_only(tmp_path):
    path = tmp_path / "machines.csv"
    row = {c: f"v-{c}" for c in fingerprint.COLUMNS}
    fingerprint._append(row, path)
    fingerprint._append({**row, "cpu_id": "other"}, path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and rows[0] == row
    key = {k: row[k] for k in fingerprint.KEY}
    assert fingerprint.known_row(key, path) == row
    assert fingerprint.known_row({**key, "software": "newer"}, path) is None


def test_the_pin_is_part_of_the_key_and_other_kinds_are_compared(tmp_path, monkeypatch):
    """Pinned math libraries compute other bits (MKL_CBWR changes the heads' digests on an
    Intel Xeon 6/167), so a row's key holds the pin; rows of other CPU models with the same
    software and pin are the ones whose digests say whether a pin makes them agree."""
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert fingerprint.pin_of_environment() == "none"
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert fingerprint.pin_of_environment() == "MKL_CBWR=COMPATIBLE"
    with pytest.raises(RuntimeError, match="before torch is imported"):
        import torch  # noqa: F401 (the test process has it: apply_pin must refuse)

        fingerprint.apply_pin("avx2")
    with pytest.raises(ValueError, match="unknown pin 'avx3'"):
        fingerprint.apply_pin("avx3")

    path = tmp_path / "machines.csv"
    row = {c: f"v-{c}" for c in fingerprint.COLUMNS}
    fingerprint._append(row, path)
    fingerprint._append({**row, "cpu_id": "amd", "usdh": "other"}, path)
    fingerprint._append({**row, "cpu_id": "amd2", "pin": "none"}, path)
    key = {k: row[k] for k in fingerprint.KEY}
    assert [r["cpu_id"] for r in fingerprint.other_kinds(key, path)] == ["amd"]
    assert fingerprint.known_row({**key, "pin": "none"}, path) is None


def test_rows_written_before_the_pin_was_recorded_read_as_unpinned(tmp_path):
    path = tmp_path / "machines.csv"
    old = [c for c in fingerprint.COLUMNS if c != "pin"]
    path.write_text(",".join(old) + "\n" + ",".join(f"v-{c}" for c in old) + "\n")
    (row,) = fingerprint.read_machines(path)
    assert row["pin"] == "none"
    fingerprint._append({**row, "cpu_id": "new"}, path)
    assert [r["pin"] for r in fingerprint.read_machines(path)] == ["none", "none"]
