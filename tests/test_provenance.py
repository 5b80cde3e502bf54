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
