"""What every result records about its machine and math libraries (usdh.provenance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from usdh.provenance import environment, libraries, machine

ROOT = Path(__file__).parents[1]


def test_the_record_is_the_same_twice_and_names_no_file():
    """A rerun computing the same numbers must write the same bytes, in any folder."""
    a, b = environment("cpu"), environment("cpu")
    assert a == b
    text = json.dumps(a)
    assert str(ROOT) not in text and sys.prefix not in text


def test_the_math_libraries_with_torch_loaded():
    lib = libraries()
    blas = [p for p in lib["threadpools"] if p["user_api"] == "blas"]
    assert blas and all("filepath" not in p for p in lib["threadpools"])
    assert lib["torch"]["threads"] == torch.get_num_threads()
    assert lib["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert lib["torch"]["build"] and all(isinstance(line, str) for line in lib["torch"]["build"])
    assert not any("Build settings" in line for line in lib["torch"]["build"])


def test_the_record_does_not_import_torch():
    """The shallow stages are torch-free; recording their environment must keep them so."""
    script = (
        "import sys, json\n"
        "from usdh.provenance import environment\n"
        "env = environment()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'torch' not in env['libraries'], env['libraries']\n"
        "print(json.dumps(env['cpu']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == machine()


def test_two_copies_of_one_library_are_listed_in_one_order(monkeypatch):
    """numpy's and scipy's OpenBLAS differ only in version: the record must not depend on which
    the process loaded first (two machines once wrote them in two orders)."""
    import threadpoolctl

    pools = [
        {"user_api": "blas", "internal_api": "openblas", "prefix": "libscipy_openblas",
         "version": v, "num_threads": 2, "filepath": f"/x/{v}.so"}
        for v in ("0.3.31.188.0", "0.3.30")
    ]  # fmt: skip
    seen = []
    for order in (pools, pools[::-1]):
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda o=order: [dict(p) for p in o])
        seen.append(libraries()["threadpools"])
    assert seen[0] == seen[1]
    assert [p["version"] for p in seen[0]] == ["0.3.30", "0.3.31.188.0"]
    assert all("filepath" not in p for p in seen[0])
