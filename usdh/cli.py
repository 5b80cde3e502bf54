"""The project's command line: one sub-command per DVC stage, every knob read from params.yaml.

    python -m usdh prepare cifar10      # decode once into data/prepared/cifar10/
    python -m usdh split cifar10        # protocol index files into data/splits/cifar10/<protocol>/
    python -m usdh features cifar10     # backbone features into data/features/cifar10/<backbone>/
    python -m usdh fit itq 32 0         # models/<dataset>/itq/32/0/ (experiment.dataset)
    python -m usdh encode itq 32 0      # codes/<dataset>/itq/32/0/{query,database}.npy
    python -m usdh evaluate itq 32 0    # metrics/<dataset>/itq/32/0.json and curves
    python -m usdh ablate no_rotation 32 0   # USDH without one term: metrics/ablations/<dataset>/
    python -m usdh classify itq 32 0    # linear classifier on codes: metrics/classification/
    python -m usdh finetune usdh 32 0   # end to end with the backbone's last units (a GPU's job)
    python -m usdh validate usdh 32 0 --set loss.semantic.weight=2   # mAP on a validation split

Heavy imports (torch) happen inside the commands that need them, so the light stages start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usdh.params import ParamsError, load_params, section, validate_params

__all__ = ["main"]

log = logging.getLogger("usdh")

PREPARED = Path("data/prepared")
SPLITS = Path("data/splits")
FEATURES = Path("data/features")


def _dataset_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    datasets = section(params, "datasets")
    if name not in datasets:
        raise ParamsError(
            f"dataset {name!r} is not configured in params.yaml (configured: "
            f"{', '.join(sorted(datasets))}); add a 'datasets.{name}' entry"
        )
    return datasets[name]


def cmd_prepare(params: dict[str, Any], dataset: str) -> None:
    """Find (or download) the dataset and decode it once into a compact cache."""
    from usdh.data import load_dataset, prepare_dataset

    cfg = _dataset_params(params, dataset)
    ds = load_dataset(dataset, path=cfg.get("path"), download=bool(cfg.get("download", False)))
    summary = prepare_dataset(ds, PREPARED / dataset)
    log.info(
        "prepared %s (%s): %d images in %.1f s",
        dataset,
        ds.source,
        len(ds),
        summary.get("seconds", float("nan")),
    )


def cmd_split(params: dict[str, Any], dataset: str) -> None:
    """Write the seeded index files of every protocol configured for the dataset."""
    from usdh.data import load_prepared, make_split, save_split

    cfg = _dataset_params(params, dataset)
    seed = int(section(params, "split_seed"))
    ds = load_prepared(PREPARED / dataset)
    for protocol in cfg["protocols"]:
        split = make_split(ds, protocol, seed=seed, train_subset=cfg.get("train_subset"))
        save_split(split, SPLITS / dataset / protocol)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in split.items())
        log.info("split %s/%s (seed %d): %s", dataset, protocol, seed, sizes)


def cmd_features(params: dict[str, Any], dataset: str) -> None:
    """Backbone features of every image, and of rotated views of the training subset."""
    from usdh.backbones import build_backbone
    from usdh.data import load_prepared, load_split
    from usdh.features import extract_features, feature_provenance, save_features

    cfg = _dataset_params(params, dataset)
    fp = section(params, "features")
    seed = int(section(params, "split_seed"))
    ds = load_prepared(PREPARED / dataset)
    main_protocol = cfg["protocols"][0]
    split = load_split(SPLITS / dataset / main_protocol, ds)
    rot_idx = split["train_subset"] if "train_subset" in split else split["train"]
    backbone = build_backbone(fp["backbone"], weights=fp["weights"], seed=seed)
    common = {
        "input_size": fp["input_size"],
        "batch_size": fp["batch_size"],
        "device": fp["device"],
        "dtype": fp["dtype"],
        "num_workers": fp["num_workers"],
        "threads": fp["threads"],
    }
    info: dict[str, Any] = {}
    feats = extract_features(ds, backbone, info=info, **common)
    rinfo: dict[str, Any] = {}
    angles = fp["rotation_angles"]
    rotations = None
    if angles:
        rotations = extract_features(
            ds,
            backbone,
            angles=angles,
            indices=rot_idx,
            rotation_mode=fp["rotation_mode"],
            info=rinfo,
            **common,
        )
    provenance = feature_provenance(
        info,
        dataset=ds.name,
        source=ds.source,
        seed=seed,
        rotations_run=rinfo if rotations is not None else None,
        rotation_protocol=main_protocol,
    )
    out = FEATURES / dataset / fp["backbone"]
    save_features(
        out,
        feats,
        rotations,
        provenance=provenance,
        rotation_indices=rot_idx if rotations is not None else None,
        dtype=fp["storage_dtype"],
    )
    log.info("features %s/%s: %s -> %s", dataset, fp["backbone"], feats.shape, out)


def _rotated_views(fs: Any) -> dict[str, Any]:
    """The deep methods' extra training inputs from a stored feature set: rotated views, the rows
    they belong to, and their angles (degrees)."""
    prov = fs.provenance
    return {
        "rotations": None if fs.rotations is None else np.asarray(fs.rotations),
        "rotation_indices": fs.rotation_indices,
        "angles": prov.get("rotations", {}).get("angles") or prov.get("angles"),
    }


def _run_context(params: dict[str, Any], method: str, bits: int, seed: int) -> dict[str, Any]:
    """What fit / encode / evaluate share: the experiment's dataset, split, features and paths."""
    from usdh.data import load_split
    from usdh.experiment import ExperimentPaths, method_class

    exp = section(params, "experiment")
    dataset, protocol = exp["dataset"], exp["protocol"]
    if method not in exp["methods"]:
        raise ParamsError(
            f"method {method!r} is not in experiment.methods ({', '.join(exp['methods'])})"
        )
    method_class(method)  # unknown names fail here, with the list of known ones
    backbone = section(params, "features", "backbone")
    return {
        "dataset": dataset,
        "protocol": protocol,
        "backbone": backbone,
        "split": load_split(SPLITS / dataset / protocol),
        "features_dir": FEATURES / dataset / backbone,
        "paths": ExperimentPaths(dataset, method, bits, seed),
        "record": {
            "dataset": dataset,
            "protocol": protocol,
            "backbone": backbone,
            "method": method,
            "bits": bits,
            "seed": seed,
        },
    }


def cmd_fit(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """Fit one method at one code length and seed on the experiment's training rows."""
    from usdh.experiment import fit_method
    from usdh.features import load_features

    ctx = _run_context(params, method, bits, seed)
    fs = load_features(ctx["features_dir"], mmap_mode="r")
    hasher = fit_method(
        method,
        bits,
        seed,
        np.asarray(fs.features),
        ctx["split"],
        ctx["paths"],
        method_params=(params.get("methods") or {}).get(method) or {},
        **_rotated_views(fs),
        record=ctx["record"],
    )
    log.info("fitted %s -> %s", hasher, ctx["paths"].model)


def cmd_encode(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """Encode the protocol's queries and database with the fitted hasher."""
    from usdh.experiment import encode_method
    from usdh.features import load_features

    ctx = _run_context(params, method, bits, seed)
    fs = load_features(ctx["features_dir"], mmap_mode="r")
    rates = encode_method(method, np.asarray(fs.features), ctx["split"], ctx["paths"])
    log.info(
        "encoded %s/%d/%d: %.0f database codes/s", method, bits, seed, rates["database_codes_per_s"]
    )


def _evaluate(
    params: dict[str, Any], ctx: dict[str, Any], paths: Any, record: dict[str, Any]
) -> dict[str, Any]:
    """Score saved codes with the protocol's cut-off and the evaluation section's settings."""
    from usdh.data import PROTOCOLS, load_prepared
    from usdh.experiment import evaluate_method

    ev = section(params, "evaluation")
    ds = load_prepared(PREPARED / ctx["dataset"])
    return evaluate_method(
        ds.labels,
        ctx["split"],
        paths,
        PROTOCOLS[ctx["protocol"]].topk,
        list(ev["precision_at"]),
        int(ev["radius"]),
        {**record, "source": ds.source},
    )


def cmd_evaluate(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """mAP (protocol cut-off and all, both tie rules), PR by radius, precision@N."""
    ctx = _run_context(params, method, bits, seed)
    m = _evaluate(params, ctx, ctx["paths"], ctx["record"])
    log.info(
        "%s %d bits seed %d: mAP@%s %.4f (tie-aware %.4f), mAP@all %.4f",
        method,
        bits,
        seed,
        m["topk"],
        m["mAP"],
        m["mAP_tie_aware"],
        m["mAP_all"],
    )


def _fit_encode_evaluate(
    params: dict[str, Any],
    ctx: dict[str, Any],
    method: str,
    bits: int,
    seed: int,
    paths: Any,
    method_params: dict[str, Any],
    record: dict[str, Any],
) -> dict[str, Any]:
    """fit -> encode -> evaluate in one process (the ablations' runs are one stage each)."""
    from usdh.experiment import encode_method, fit_method
    from usdh.features import load_features

    fs = load_features(ctx["features_dir"], mmap_mode="r")
    features = np.asarray(fs.features)
    fit_method(
        method,
        bits,
        seed,
        features,
        ctx["split"],
        paths,
        method_params=method_params,
        **_rotated_views(fs),
        record=record,
    )
    encode_method(method, features, ctx["split"], paths)
    return _evaluate(params, ctx, paths, record)


def cmd_ablate(params: dict[str, Any], variant: str, bits: int, seed: int) -> None:
    """One ablation run: the ablated method with one variant's loss overrides, fit to metrics."""
    from usdh.experiment import ExperimentPaths, merge_params

    abl = section(params, "ablations")
    variants = abl["variants"]
    if variant not in variants:
        raise ParamsError(
            f"ablation variant {variant!r} is not in ablations.variants ({', '.join(variants)})"
        )
    method = abl["method"]
    ctx = _run_context(params, method, bits, seed)
    base = (params.get("methods") or {}).get(method) or {}
    method_params = merge_params(base, {"loss": variants[variant]})
    paths = ExperimentPaths(ctx["dataset"], variant, bits, seed, group="ablations")
    record = {**ctx["record"], "variant": variant, "overrides": variants[variant]}
    m = _fit_encode_evaluate(params, ctx, method, bits, seed, paths, method_params, record)
    log.info("ablation %s %d bits seed %d: mAP %.4f", variant, bits, seed, m["mAP"])


def _classification_context(params: dict[str, Any]) -> dict[str, Any]:
    from usdh.data import load_prepared, load_split
    from usdh.features import load_features

    cfg = section(params, "classification")
    dataset, protocol = cfg["dataset"], cfg.get("protocol", "classification")
    backbone = section(params, "features", "backbone")
    ds = load_prepared(PREPARED / dataset)
    fs = load_features(FEATURES / dataset / backbone, mmap_mode="r")
    return {
        "cfg": cfg,
        "dataset": dataset,
        "protocol": protocol,
        "backbone": backbone,
        "source": ds.source,
        "labels": ds.labels,
        "split": load_split(SPLITS / dataset / protocol, ds),
        "fs": fs,
        "features": np.asarray(fs.features),
    }


_CLASSIFY_PARTS = ("train", "val", "test")


def cmd_classify(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """A linear classifier on one method's codes (train -> C on val -> test accuracy)."""
    from usdh.codes import unpack_bits
    from usdh.experiment import ExperimentPaths, classify_codes, fit_method
    from usdh.io import save_json

    c = _classification_context(params)
    if method not in c["cfg"]["methods"]:
        raise ParamsError(
            f"method {method!r} is not in classification.methods ({', '.join(c['cfg']['methods'])})"
        )
    split, fs, features, y = c["split"], c["fs"], c["features"], c["labels"]
    paths = ExperimentPaths(c["dataset"], method, bits, seed, group="classification")
    hasher = fit_method(
        method,
        bits,
        seed,
        features,
        split,
        paths,
        method_params=(params.get("methods") or {}).get(method) or {},
        **_rotated_views(fs),
    )
    codes = {p: unpack_bits(hasher.encode(features[split[p]])) for p in _CLASSIFY_PARTS}
    result = classify_codes(*(a for p in _CLASSIFY_PARTS for a in (codes[p], y[split[p]])), seed)
    record = {
        "dataset": c["dataset"],
        "protocol": c["protocol"],
        "source": c["source"],
        "backbone": c["backbone"],
        "method": method,
        "bits": bits,
        "seed": seed,
        **result,
        **{f"n_{p}": len(split[p]) for p in _CLASSIFY_PARTS},
    }
    save_json(paths.metrics, record)
    log.info("classify %s %d bits seed %d: accuracy %.4f", method, bits, seed, result["accuracy"])


def cmd_classify_features(params: dict[str, Any]) -> None:
    """The reference: the same linear classifier on the real-valued backbone features."""
    from usdh.experiment import classify_codes
    from usdh.io import save_json

    c = _classification_context(params)
    split, features, y = c["split"], c["features"], c["labels"]
    result = classify_codes(
        *(a for p in _CLASSIFY_PARTS for a in (features[split[p]], y[split[p]])), 0
    )
    out = Path("metrics/classification") / c["dataset"] / "features.json"
    save_json(
        out,
        {
            "dataset": c["dataset"],
            "protocol": c["protocol"],
            "source": c["source"],
            "backbone": c["backbone"],
            "method": "features",
            "dim": int(features.shape[1]),
            **result,
        },
    )
    log.info("classify features (%d-d): accuracy %.4f", features.shape[1], result["accuracy"])


def cmd_finetune(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """Fine-tune a deep method with the backbone's last units on images, then encode and score."""
    from usdh.backbones import build_backbone
    from usdh.data import load_prepared
    from usdh.experiment import ExperimentPaths
    from usdh.features import load_features
    from usdh.finetune import finetune_method

    cfg = section(params, "finetune")
    ctx = _run_context(params, method, bits, seed)
    fp = section(params, "features")
    ds = load_prepared(PREPARED / ctx["dataset"])
    fs = load_features(ctx["features_dir"], mmap_mode="r")
    backbone = build_backbone(fp["backbone"], weights=fp["weights"], seed=seed)
    paths = ExperimentPaths(ctx["dataset"], method, bits, seed, group="finetune")
    method_params = {
        **((params.get("methods") or {}).get(method) or {}),
        **(cfg.get("train") or {}),
    }
    angles = fp["rotation_angles"] or None
    finetune_method(
        method,
        bits,
        seed,
        ds,
        np.asarray(fs.features),
        ctx["split"],
        backbone,
        paths,
        method_params=method_params,
        n_trainable=int(cfg.get("n_trainable", 1)),
        input_size=cfg.get("input_size") or fp["input_size"],
        angles=angles,
        rotation_mode=fp["rotation_mode"],
        batch_size=fp["batch_size"],
        record=ctx["record"],
    )
    m = _evaluate(params, ctx, paths, {**ctx["record"], "mode": "finetune"})
    log.info("finetuned %s %d bits seed %d: mAP %.4f", method, bits, seed, m["mAP"])


def cmd_validate(
    params: dict[str, Any], method: str, bits: int, seed: int, overrides: Sequence[str] = ()
) -> None:
    """Score a method on a validation split of the training pool (for choosing hyperparameters)."""
    from usdh.data import PROTOCOLS, load_prepared
    from usdh.experiment import validate_method, validation_split
    from usdh.features import load_features
    from usdh.io import save_json

    ctx = _run_context(params, method, bits, seed)
    method_params = dict((params.get("methods") or {}).get(method) or {})
    for text in overrides:
        _apply_override(method_params, text)
    fs = load_features(ctx["features_dir"], mmap_mode="r")
    ds = load_prepared(PREPARED / ctx["dataset"])
    val = validation_split(ctx["split"], int(section(params, "split_seed")))
    result = validate_method(
        method,
        bits,
        seed,
        np.asarray(fs.features),
        ds.labels,
        ctx["split"],
        val,
        method_params=method_params,
        **_rotated_views(fs),
        topk=PROTOCOLS[ctx["protocol"]].topk,
    )
    result.update(ctx["record"], overrides=list(overrides))
    tag = "-".join(o.replace("/", "_") for o in overrides) or "default"
    out = Path("reports/validation") / ctx["dataset"] / method / str(bits) / f"{seed}_{tag}.json"
    save_json(out, result)
    print(f"{method} {bits} bits seed {seed} {list(overrides)}: val mAP {result['val_mAP']:.4f}")


def _apply_override(target: dict[str, Any], text: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into nested dicts."""
    import yaml

    if "=" not in text:
        raise ValueError(f"an override looks like key.sub=value, got {text!r}")
    key, value = text.split("=", 1)
    *path, last = key.split(".")
    node = target
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {text!r}: {part!r} is not a mapping")
    node[last] = yaml.safe_load(value)


def cmd_report(params: dict[str, Any]) -> None:
    """Tables, figures and reports/README.md from the metrics files."""
    from usdh.provenance import environment
    from usdh.report import build_report

    fp = section(params, "features")
    env = environment(fp["device"])
    versions = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    context = {
        "backbone": fp["backbone"],
        "input_size": fp["input_size"],
        "weights": fp["weights"],
        "versions": f"Python {env['python']}, {versions}",
        "device": f"{fp['device']} on {env['machine']} with {env['cpu_count']} CPUs",
    }
    context["ablated"] = (params.get("ablations") or {}).get("method", "usdh")
    timings = Path("reports/timings.md")
    if timings.exists():
        context["timings"] = timings.read_text().strip()
    summary = build_report(Path("metrics"), Path("reports"), context, models_root=Path("models"))
    log.info("report: %d result rows, %d figures", summary["rows"], len(summary["figures"]))


DATASET_COMMANDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "prepare": cmd_prepare,
    "split": cmd_split,
    "features": cmd_features,
}
RUN_COMMANDS: dict[str, Callable[[dict[str, Any], str, int, int], None]] = {
    "fit": cmd_fit,
    "encode": cmd_encode,
    "evaluate": cmd_evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usdh", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in DATASET_COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").split("\n")[0])
        p.add_argument("dataset", help="a dataset configured under 'datasets' in params.yaml")
    sub.add_parser("report", help=(cmd_report.__doc__ or "").split("\n")[0])
    p = sub.add_parser("ablate", help=(cmd_ablate.__doc__ or "").split("\n")[0])
    p.add_argument("variant", help="a variant listed in ablations.variants")
    p.add_argument("bits", type=int, help="code length (a multiple of 8)")
    p.add_argument("seed", type=int, help="the method's random seed")
    p = sub.add_parser("classify", help=(cmd_classify.__doc__ or "").split("\n")[0])
    p.add_argument("method", help="a method listed in classification.methods")
    p.add_argument("bits", type=int, help="code length (a multiple of 8)")
    p.add_argument("seed", type=int, help="the method's random seed")
    sub.add_parser("classify-features", help=(cmd_classify_features.__doc__ or "").split("\n")[0])
    for name, fn in [*RUN_COMMANDS.items(), ("finetune", cmd_finetune), ("validate", cmd_validate)]:
        p = sub.add_parser(name, help=(fn.__doc__ or "").split("\n")[0])
        p.add_argument("method", help="a method listed in experiment.methods")
        p.add_argument("bits", type=int, help="code length (a multiple of 8)")
        p.add_argument("seed", type=int, help="the method's random seed")
    p.add_argument(
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
    try:
        params = load_params(args.params)
        validate_params(params)
        if args.command == "report":
            cmd_report(params)
        elif args.command in DATASET_COMMANDS:
            DATASET_COMMANDS[args.command](params, args.dataset)
        elif args.command == "ablate":
            cmd_ablate(params, args.variant, args.bits, args.seed)
        elif args.command == "classify":
            cmd_classify(params, args.method, args.bits, args.seed)
        elif args.command == "classify-features":
            cmd_classify_features(params)
        elif args.command == "finetune":
            cmd_finetune(params, args.method, args.bits, args.seed)
        elif args.command == "validate":
            cmd_validate(params, args.method, args.bits, args.seed, args.overrides)
        else:
            RUN_COMMANDS[args.command](params, args.method, args.bits, args.seed)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # our errors already say what is wrong and how to fix it: print them, not a traceback
        if args.verbose:
            raise
        print(f"usdh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
