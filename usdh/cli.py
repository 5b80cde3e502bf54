"""The project's command line: one sub-command per DVC stage, every knob read from params.yaml.

    python -m usdh prepare cifar10      # decode once into data/prepared/cifar10/
    python -m usdh split cifar10        # protocol index files into data/splits/cifar10/<protocol>/
    python -m usdh features cifar10     # backbone features into data/features/cifar10/<backbone>/
    python -m usdh fit itq 32 0         # models/retrieval/<dataset>/<protocol>/itq/32/0/
    python -m usdh encode itq 32 0      # codes/retrieval/<dataset>/<protocol>/itq/32/0/
    python -m usdh evaluate itq 32 0    # metrics/retrieval/<dataset>/<protocol>/itq/32/0.json
    python -m usdh ablate no_rotation 32 0   # USDH without one term: metrics/ablations/...
    python -m usdh classify itq 32 0    # linear classifier on codes: metrics/classification/...
    python -m usdh finetune usdh 32 0   # end to end with the backbone's last units (a GPU's job)
    python -m usdh validate usdh 32 0 --set loss.semantic.weight=2   # mAP on a validation split

Each command lives in its own module of :mod:`usdh.stages`, imported only when it runs: the light
stages start fast, and a stage's code dependencies (``dvc.yaml``) are its module's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from usdh.params import load_params, validate_params

__all__ = ["COMMANDS", "main", "stage_module"]

log = logging.getLogger("usdh")

#: command -> (what its positional arguments are, one line of help)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "prepare": (("dataset",), "find (or download) a dataset and decode it once"),
    "split": (("dataset",), "write the seeded index files of every configured protocol"),
    "features": (("dataset",), "backbone features of every image and of rotated views"),
    "fit": (("method", "bits", "seed"), "fit one method on the experiment's training rows"),
    "encode": (("method", "bits", "seed"), "encode the protocol's queries and database"),
    "evaluate": (("method", "bits", "seed"), "mAP, PR by radius and precision@N of saved codes"),
    "ablate": (("variant", "bits", "seed"), "the ablated method with one variant's overrides"),
    "classify": (("method", "bits", "seed"), "a linear classifier on one method's codes"),
    "classify-features": ((), "the same classifier on the real-valued features (reference)"),
    "finetune": (("method", "bits", "seed"), "train the backbone's last units with the head"),
    "validate": (("method", "bits", "seed"), "score a setting on a validation split"),
    "report": ((), "tables, figures and reports/README.md from the metrics files"),
}

_ARG_HELP = {
    "dataset": ("a dataset configured under 'datasets' in params.yaml", str),
    "method": ("a registered method listed in the command's params section", str),
    "variant": ("a variant listed in ablations.variants", str),
    "bits": ("code length (a multiple of 8)", int),
    "seed": ("the method's random seed", int),
}


def stage_module(command: str) -> str:
    """The module that implements ``command`` (``classify-features`` ->
    ``usdh.stages.classify_features``)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
    return "usdh.stages." + command.replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usdh", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (args, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        for arg in args:
            what, kind = _ARG_HELP[arg]
            p.add_argument(arg, type=kind, help=what)
    sub.choices["validate"].add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a method parameter, e.g. loss.semantic.construction=knn",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():
        # in logs (CI, dvc's captured output) a progress bar line every 10 s is plenty
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    positional = [getattr(args, a) for a in COMMANDS[args.command][0]]
    extra = {"overrides": args.overrides} if args.command == "validate" else {}
    try:
        params = load_params(args.params)
        validate_params(params)
        module = importlib.import_module(stage_module(args.command))
        module.run(params, *positional, **extra)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # our errors already say what is wrong and how to fix it: print them, not a traceback
        if args.verbose:
            raise
        print(f"usdh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
