"""The project's command line: one sub-command per DVC stage, every knob read from params.yaml.

    python -m usdh check                # the whole of params.yaml, before any other stage
    python -m usdh prepare cifar10      # decode once into data/prepared/cifar10/
    python -m usdh split cifar10        # protocol index files into data/splits/cifar10/<protocol>/
    python -m usdh features cifar10     # backbone features into data/features/cifar10/<backbone>/
    python -m usdh features cifar10 --experiment calibration   # GIST, for the calibration
    python -m usdh bank cifar10         # augmented views (CIBHash): data/banks/cifar10/<backbone>/
    python -m usdh bank cifar10 --experiment calibration   # the same views through GIST
    python -m usdh fit itq              # every bits x seed: models/ and codes/retrieval/.../itq/
    python -m usdh fit itq 32 0         # one run: models/retrieval/<dataset>/<protocol>/itq/32/0/
    python -m usdh encode itq           # re-encode from the saved models
    python -m usdh evaluate itq         # metrics/retrieval/.../itq/<bits>/<seed>.json, plots/...
    python -m usdh fit itq --setting fashion_mnist/1k-69k   # a settings entry: models/settings/...
    python -m usdh ablate no_rotation   # USDH without one term: metrics/ablations/...
    python -m usdh classify itq         # linear classifier on codes: metrics/classification/...
    python -m usdh finetune usdh        # end to end with the backbone's last units (a GPU's job)
    python -m usdh diagnose             # USDH's loss on ITQ's codes and on its own
    python -m usdh validate usdh        # the selection budget on the validation split
    python -m usdh bank-study           # CIBHash with larger banks: reports/bank_size.md
    python -m usdh fingerprint          # does this machine compute what reports/machines.csv says?
    python -m usdh compare HEAD~1       # what changed in the results since a revision

The run commands take ``[bits seed]`` to run one code length and seed instead of all of them;
fit, encode and evaluate take ``--protocol P`` to run on another of ``experiment.protocols``, or
``--setting DATASET/PROTOCOL`` to run on an entry of ``settings`` (the experiment's methods on
another dataset, protocol or backbone, ``models/settings/...``); with features and bank
``--experiment calibration`` serves the ``calibration`` section instead (GIST features, the
classic baselines, ``models/calibration/...``).

Each command lives in its own module of :mod:`usdh.stages`, imported only when it runs: the light
stages start fast, and a stage's code dependencies (``dvc.yaml``) are its module's imports. The
:data:`TOOLS` are not stages (no stage reads what they write); each parses its own arguments.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from usdh._omp import watch
from usdh.params import EXPERIMENTS, load_params, params_source
from usdh.timing import stage_timer

__all__ = [
    "COMMANDS",
    "EXPERIMENT_COMMANDS",
    "PROTOCOL_COMMANDS",
    "TOOLS",
    "main",
    "stage_module",
]

log = logging.getLogger("usdh")

#: command -> (what its positional arguments are, one line of help)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "check": ((), "check the whole of params.yaml before any other stage works"),
    "prepare": (("dataset",), "find (or download) a dataset and decode it once"),
    "split": (("dataset",), "write the seeded index files of every configured protocol"),
    "features": (("dataset",), "backbone features of every image and of rotated views"),
    "bank": (("dataset",), "features of seeded augmented views, for methods that need them"),
    "fit": (("method", "bits", "seed"), "fit and encode a method on the experiment's rows"),
    "encode": (("method", "bits", "seed"), "encode the protocol's queries and database again"),
    "evaluate": (("method", "bits", "seed"), "mAP, PR by radius and precision@N of saved codes"),
    "ablate": (("variant", "bits", "seed"), "the ablated method with one variant's overrides"),
    "classify": (("method", "bits", "seed"), "a linear classifier on one method's codes"),
    "classify-features": ((), "the same classifier on the real-valued features (reference)"),
    "finetune": (("method", "bits", "seed"), "train the backbone's last units with the head"),
    "diagnose": ((), "the USDH loss on ITQ's codes and on USDH's own"),
    "validate": (("method",), "the selection budget of a method on the validation split"),
    "report": ((), "tables, figures and reports/README.md from the metrics files"),
    "bank-study": ((), "a two-view method with larger banks of views (not a stage)"),
}

#: commands that are not pipeline stages -> (their module, with a ``main(argv)``; one line of help)
TOOLS: dict[str, tuple[str, str]] = {
    "fingerprint": (
        "usdh.fingerprint",
        "digests of a fixed sample: is this machine bitwise known?",
    ),
    "compare": ("usdh.compare", "what changed between two runs' results, verdict included"),
}

_ARG_HELP = {
    "dataset": ("a dataset configured under 'datasets' in params.yaml", str),
    "method": ("a registered method listed in the command's params section", str),
    "variant": ("a variant listed in ablations.variants", str),
    "bits": ("code length (a multiple of 8); omitted: every one of the params section", int),
    "seed": ("the method's random seed; omitted: every one of the params section", int),
}
#: positional arguments that may be left out (together): the run commands' bits and seed
_OPTIONAL = ("bits", "seed")
#: commands that run on any of experiment.protocols (``--protocol``; default: the main one)
PROTOCOL_COMMANDS = ("fit", "encode", "evaluate")
#: commands that serve another params section's runs (``--experiment``; see params.EXPERIMENTS)
EXPERIMENT_COMMANDS = ("features", "bank", "fit", "encode", "evaluate")


def stage_module(command: str) -> str:
    """The module that implements ``command`` (``classify-features`` ->
    ``usdh.stages.classify_features``)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
    return "usdh.stages." + command.replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    tools = "; ".join(f"{name}: {text}" for name, (_, text) in TOOLS.items())
    parser = argparse.ArgumentParser(
        prog="usdh",
        description=__doc__.split("\n")[0],
        epilog=f"Not stages (python -m usdh <tool> --help): {tools}.",
    )
    parser.add_argument("--params", default="params.yaml", help="parameters file (params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (args, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        for arg in args:
            what, kind = _ARG_HELP[arg]
            nargs = "?" if arg in _OPTIONAL else None
            p.add_argument(arg, type=kind, help=what, nargs=nargs)
        if name in PROTOCOL_COMMANDS:
            p.add_argument(
                "--protocol",
                help="one of the section's protocols (default: experiment.protocol, the main one)",
            )
            p.add_argument(
                "--setting",
                metavar="DATASET/PROTOCOL",
                help="an entry of 'settings': the experiment's methods on its dataset, protocol "
                "and backbone",
            )
        if name in EXPERIMENT_COMMANDS:
            p.add_argument(
                "--experiment",
                default="experiment",
                choices=sorted(EXPERIMENTS),
                help="the params section whose runs to serve (default: experiment)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    watch()  # short OpenMP spins while another process shares the CPU (usdh/_omp.py)
    if not sys.stderr.isatty():
        # in logs (CI, dvc's captured output) a progress bar line every 10 s is plenty
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    positional = [getattr(args, a) for a in COMMANDS[args.command][0]]
    if (getattr(args, "bits", None) is None) != (getattr(args, "seed", None) is None):
        print(f"usdh {args.command}: error: give both bits and seed, or neither", file=sys.stderr)
        return 2
    if getattr(args, "setting", None) and (
        args.protocol is not None or getattr(args, "experiment", "experiment") != "experiment"
    ):
        print(
            f"usdh {args.command}: error: --setting names the dataset, protocol and features "
            "itself: give it without --protocol and --experiment",
            file=sys.stderr,
        )
        return 2
    try:
        # the stage's time counts its imports (torch's) and checks too
        with stage_timer() as record, params_source(args.params):
            params = load_params(args.params)
            module = importlib.import_module(stage_module(args.command))
            extra = {"protocol": args.protocol} if args.command in PROTOCOL_COMMANDS else {}
            if getattr(args, "setting", None):
                extra["setting"] = args.setting
            if args.command in EXPERIMENT_COMMANDS:
                extra["experiment"] = args.experiment
            # the whole file (usdh.paramcheck) with the class checks of the stage's own method
            # only, or for a data stage only the sections it reads: a stage imports no method
            # code (and no torch) it does not run (usdh/stages/__init__.py)
            module.check_params(params, *positional, **extra)
            record.update(module.run(params, *positional, **extra) or {})
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # our errors already say what is wrong and how to fix it: print them, not a traceback
        if args.verbose:
            raise
        print(f"usdh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # the machine's, not the user's: a full disk, a permission, a vanished mount
        if args.verbose:
            raise
        where = f" while writing or reading {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            what = f"no space left on device{where}; free some space and rerun"
        else:
            what = f"{exc.strerror or exc}{where}"
        print(f"usdh {args.command}: error: {what}", file=sys.stderr)
        return 2
    return 0
