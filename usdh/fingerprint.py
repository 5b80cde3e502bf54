"""``python -m usdh fingerprint``: does this machine compute what another one did, bit for bit?

Results are bitwise repeatable only on one CPU model with the same software (README,
"Reproducibility: the contract"). This computes, in well under two minutes, three digests from a
fixed sample (the first 256 Oxford-17 images, read from the archive):

* the backbone's features of the sample (``features:`` of params.yaml, its engine included),
  with their rotated views and their bank of augmented views;
* the fitted state of a 32-bit USDH head trained on them (``methods.usdh``);
* the fitted state of a 32-bit CIBHash head trained on their augmented views (``methods.cibhash``).

``reports/machines.csv`` keeps one row per machine kind and software (``--write`` appends this
machine's when it has none). ``tests/test_fingerprint.py`` compares this machine's digests with
its row, where there is one, so determinism on one kind of machine stays checked; a mismatch on
a known machine means the code, not the CPU, changed the numbers. Not a pipeline stage: it writes
nothing any stage reads.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIGESTS",
    "KEY",
    "MACHINES",
    "PINS",
    "apply_pin",
    "compute",
    "known_row",
    "machine_key",
    "main",
    "other_kinds",
    "pin_of_environment",
]

MACHINES = Path("reports") / "machines.csv"
#: the sample: the first images of Oxford-17 in the reader's order
SAMPLE = 256
BITS = 32
#: what a row is matched on: the processor kind, the software (versions of the packages that
#: can change a number, the features engine's included) and the math libraries' pinned code paths
KEY = ("cpu_id", "isa", "cores", "software", "pin")
DIGESTS = ("features", "usdh", "cibhash")
COLUMNS = ("cpu", *KEY, "math_libraries", *DIGESTS, "seconds", "recorded")
ENGINES = ("openvino", "onnxruntime", "onnx")
#: the settings that pin the code path of the math libraries the deep heads use (MKL's branch
#: for torch's matrix products, ATen's vector kernels), by name (``--pin``; README, "Pinning the
#: math libraries": what each costs and changes). ``avx2``: MKL documents its AVX2
#: branch for Intel processors only; ``compatible``: the branch it documents for any vendor.
PINS: dict[str, dict[str, str]] = {
    "none": {},
    "avx2": {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "compatible": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"},
}
#: every variable a pin sets (a pin clears the ones it does not set)
_PIN_VARIABLES = tuple(dict.fromkeys(k for pin in PINS.values() for k in pin))


def pin_of_environment() -> str:
    """The pinning variables this process runs with (``none``, or ``NAME=value ...``): they
    change the deep heads' bits, so they are part of a row's key."""
    pairs = [f"{k}={os.environ[k]}" for k in _PIN_VARIABLES if os.environ.get(k)]
    return " ".join(pairs) or "none"


def apply_pin(name: str) -> None:
    """Set ``PINS[name]`` for this process; it must come before torch is imported (MKL and
    ATen read them when they load)."""
    if name not in PINS:
        raise ValueError(f"unknown pin {name!r}; choose one of {', '.join(PINS)}")
    if PINS[name] and "torch" in sys.modules:
        raise RuntimeError("the pin must be set before torch is imported; run it in a new process")
    for k in _PIN_VARIABLES:
        os.environ.pop(k, None)
    os.environ.update(PINS[name])


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


#: saved state that is not learned: the epoch log holds each epoch's wall time
_NOT_LEARNED = ("log_",)


def _state_digest(hasher: Any) -> str:
    """The digest of a fitted hasher's learned state (every array it saves, by name, but the
    epoch log, whose wall times differ run to run)."""
    names = sorted(n for n in hasher._state if n not in _NOT_LEARNED)
    return _digest(*(np.asarray(getattr(hasher, name)) for name in names))


def machine_key() -> dict[str, Any]:
    """This machine's row fields except the digests."""
    from usdh.provenance import environment, machine_columns

    columns = {**machine_columns(environment(packages=ENGINES)), "pin": pin_of_environment()}
    return {k: columns[k] for k in ("cpu", *KEY, "math_libraries")}


def compute(params: dict[str, Any], archive: str | Path | None = None) -> dict[str, str]:
    """The three digests of this machine (see the module docstring)."""
    from usdh.augment import Augmentation
    from usdh.data import find_dataset
    from usdh.data.oxford17 import read_oxford17
    from usdh.features import extract_features
    from usdh.fitting import make_hasher
    from usdh.hasher import TrainingViews
    from usdh.params import section
    from usdh.stages.common import method_params
    from usdh.stages.features import extraction_settings, pipeline_backbone

    images = read_oxford17(archive or find_dataset("oxford17"))
    if len(images) < SAMPLE:
        raise ValueError(f"the Oxford-17 copy holds {len(images)} images; {SAMPLE} are needed")
    fp = section(params, "features")
    backbone = pipeline_backbone(params)
    # the thread count changes the bits: pinned to the cores this process may use (part of the
    # row's key), whatever an earlier caller in this process set
    threads = len(os.sched_getaffinity(0))
    settings = {**extraction_settings(fp), "progress": False, "indices": np.arange(SAMPLE)}
    settings["threads"] = threads
    feats = extract_features(images, backbone, **settings)
    angles = tuple(float(a) for a in fp["rotation_angles"])
    rotated = extract_features(
        images, backbone, angles=angles, rotation_mode=fp["rotation_mode"], **settings
    )
    augmentation = Augmentation.from_params(fp.get("augmentation"), int(params["split_seed"]))
    bank = extract_features(images, backbone, augmentation=augmentation, **settings)

    fixed = {"progress": False, "threads": threads}
    usdh = make_hasher("usdh", BITS, 0, {**method_params(params, "usdh"), **fixed})
    usdh.fit(feats, views=TrainingViews(rotations=rotated, angles=angles))
    cibhash = make_hasher("cibhash", BITS, 0, {**method_params(params, "cibhash"), **fixed})
    cibhash.fit(feats, views=TrainingViews(augmentations=bank))
    return {
        "features": _digest(feats, rotated, bank),
        "usdh": _state_digest(usdh),
        "cibhash": _state_digest(cibhash),
    }


def read_machines(path: Path = MACHINES) -> list[dict[str, str]]:
    """The rows of ``reports/machines.csv`` (none when it does not exist)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        # rows recorded before the pin was part of the key ran unpinned
        return [{**row, "pin": row.get("pin") or "none"} for row in csv.DictReader(fh)]


def known_row(key: dict[str, Any], path: Path = MACHINES) -> dict[str, str] | None:
    """The table's row for this machine kind and software, if there is one."""
    for row in read_machines(path):
        if all(row.get(k) == str(key[k]) for k in KEY):
            return row
    return None


def other_kinds(key: dict[str, Any], path: Path = MACHINES) -> list[dict[str, str]]:
    """The table's rows of other processor kinds with the same software and pin: whether two
    CPU models compute the same bits under a pin is read off these."""
    same = ("software", "pin")
    return [
        row
        for row in read_machines(path)
        if all(row.get(k) == str(key[k]) for k in same)
        and any(row.get(k) != str(key[k]) for k in KEY if k not in same)
    ]


def _append(row: dict[str, Any], path: Path) -> None:
    """Add ``row`` to the table, written whole to a temporary file and renamed."""
    from usdh.io import atomic_path

    rows = [*read_machines(path), {k: str(row[k]) for k in COLUMNS}]
    rows = [{k: r.get(k, "") for k in COLUMNS} for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(out.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usdh fingerprint", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--archive", help="the Oxford-17 archive (default: searched for)")
    parser.add_argument(
        "--write", action="store_true", help=f"add this machine to {MACHINES} if it is new"
    )
    parser.add_argument(
        "--pin",
        choices=sorted(PINS),
        help="pin the math libraries' code paths first (default: as the environment has them)",
    )
    args = parser.parse_args(argv)
    from usdh.params import load_params, params_source

    if args.pin is not None:
        try:
            apply_pin(args.pin)
        except RuntimeError as exc:
            print(f"usdh fingerprint: error: {exc}", file=sys.stderr)
            return 2

    start = time.perf_counter()
    try:
        with params_source(args.params):
            digests = compute(load_params(args.params), args.archive)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"usdh fingerprint: error: {exc}", file=sys.stderr)
        return 2
    row = {**machine_key(), **digests, "seconds": round(time.perf_counter() - start, 1)}
    row["recorded"] = datetime.now(UTC).date().isoformat()
    for k in ("cpu", *KEY, *DIGESTS, "seconds"):
        print(f"{k}: {row[k]}")
    for other in other_kinds(row):
        same = [k for k in DIGESTS if other[k] == row[k]]
        print(
            f"beside {other['cpu_id']} (same software and pin, recorded {other['recorded']}): "
            f"equal {', '.join(same) or 'none'}; differ "
            f"{', '.join(k for k in DIGESTS if k not in same) or 'none'}"
        )
    known = known_row(row)
    if known is None:
        print(f"no row of {MACHINES} has this machine kind, software and pin")
        if args.write:
            _append(row, MACHINES)
            print(f"added to {MACHINES}")
        return 0
    differ = [k for k in DIGESTS if known[k] != row[k]]
    if differ:
        print(f"MISMATCH with the row recorded {known['recorded']}: {', '.join(differ)}")
        return 1
    print(f"matches the row recorded {known['recorded']}: bitwise identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
