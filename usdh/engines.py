"""How the frozen backbone runs on the CPU: eager PyTorch, or the same network exported to ONNX and
run by OpenVINO or ONNX Runtime, because eager PyTorch leaves most of a small CPU's speed unused.

Measured on a 2-core AMD EPYC (AVX-512, AVX-512 BF16), 2 threads, EfficientNet-Lite0 at 160 px,
batches of 16, 2,000 CIFAR-10 images, the median of the blocks no other process disturbed: the
forward pass ran at 71 images/s eager (channels-last), 126 with ONNX Runtime and 276 with OpenVINO
(3.9x); with the resize and normalisation of ``extract_features``, 69, 115 and 233 images/s.
Eager runs each batch norm, ReLU6, "same" padding and residual add as its own pass over memory
and reorders every weight on every call; OpenVINO fuses them all into its 49 oneDNN convolutions
(ONNX Runtime fuses them too, but converts layouts around each of its 17 explicit pads). Under
load from other processes OpenVINO also degrades far less than eager's OpenMP threads.

A converted engine computes the same function in float32, only the round-off moves (folded batch
norm, another summation order): over those 2,000 images max |difference| / max |feature| was
4.9e-6 for OpenVINO and 4.1e-6 for ONNX Runtime, every image's cosine to eager > 0.99999999998.

Choices fixed here, and why:

* **float32, enforced.** OpenVINO's CPU plugin runs bfloat16 by default on CPUs with AVX-512 BF16
  or AMX (features move ~20% of their scale), and ``openvino.save_model`` stores weights as float16
  by default; both are switched off, and a compiled model that still runs an op in a 16-bit type is
  an error, never a silent change.
* **Fixed batch.** The converted model has a static shape ``(batch_size, 3, s, s)``; a shorter
  batch (the last one) is padded with zeros and the padding's rows are dropped, a longer one runs
  in chunks. Each image's features then do not depend on the batch it falls in (no kernel mixes
  rows; checked bitwise in ``tests/test_engines.py``), and the runtime never re-plans for a new
  shape (OpenVINO with a dynamic batch ran 22% slower).
* **Determinism.** The same input, converted model, thread count and library versions give
  bitwise identical features, run to run and process to process (one stream, a fixed thread count,
  sequential execution).
* **Signal stack.** OpenVINO swaps the thread's alternate signal stack per compiled model and
  restores it assuming last-compiled, first-freed; out of order, a later signal (torch's SIGCHLD
  handler) killed pytest with SIGSEGV. The caller's stack is put back after each compile
  (``_signal_stack_kept``).
* **One export.** Both runtimes read the ONNX that torch's TorchScript exporter writes (it needs
  the ``onnx`` package). ``openvino.convert_model`` would trace as well and run no faster, but it
  sends usage telemetry unless the user opted out.
* **Cache.** Converting takes seconds (tracing), so the converted model is kept in
  ``cache_dir`` (default ``$USDH_ENGINE_CACHE`` or ``~/.cache/usdh/engines``, outside every DVC
  output), built from the weights in memory, never downloaded. Its file name holds a key made of
  a digest of the model (its structure and state_dict bytes), the input size, the batch size and
  the engine's versions; the file records the digest and its payload's sha256, is written to a
  temporary file and moved into place with ``os.replace``, and a file that fails to load or whose
  record does not match is rebuilt, with a warning, never used. The engine always runs the bytes
  of the cache file (also right after building it), so a first run and a cached run compute the
  same thing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CACHE_ENV",
    "ENGINES",
    "EngineCacheWarning",
    "check_engine",
    "compile_engine",
    "default_cache_dir",
    "engine_available",
    "engine_version",
    "model_digest",
]

#: the engines, fastest last; "eager" is plain PyTorch and needs nothing more
ENGINES: tuple[str, ...] = ("eager", "onnxruntime", "openvino")
#: engine -> the packages it imports, (module, distribution); both export through ONNX
_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "onnxruntime": (("onnxruntime", "onnxruntime"), ("onnx", "onnx")),
    "openvino": (("openvino", "openvino"), ("onnx", "onnx")),
}
CACHE_ENV = "USDH_ENGINE_CACHE"
_MAGIC = b"USDH-ENGINE-CACHE 1\n"
_ONNX_OPSET = 17
_NO_WEIGHTS = np.zeros(0, dtype=np.uint8)  # ONNX holds its weights inline
# element types a float32 run may show in OpenVINO's runtime graph (indices, shapes, masks)
_OV_ALLOWED = frozenset({"f32", "i32", "i64", "u8", "i8", "boolean", "u1", "undefined", "dynamic"})


class EngineCacheWarning(UserWarning):
    """A cached converted model could not be used (corrupt, stale or unwritable) and was rebuilt."""


class _PrecisionError(RuntimeError):
    """The runtime compiled the network below float32: never a cache problem, never retried."""


# -- names, packages, versions ---------------------------------------------------------------------
def _import(engine: str, module: str | None = None) -> ModuleType:
    """``module`` (default: the engine's runtime), or one ValueError naming the install fix."""
    packages = _PACKAGES[engine]
    name = packages[0][0] if module is None else module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        fix = "pip install " + " ".join(dist for _, dist in packages)
        raise ValueError(
            f"engine {engine!r} needs the {name} package, which is not installed: {fix} "
            f"(or use engine 'eager', plain PyTorch)"
        ) from exc


def check_engine(name: str) -> None:
    """Fail early, with one ValueError naming the fix, if engine ``name`` is unknown or its
    package is missing (so a run stops before it reads any image)."""
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; the engines are {', '.join(ENGINES)}")
    for module, _ in _PACKAGES.get(name, ()):
        _import(name, module)


def engine_available(name: str) -> bool:
    """Whether engine ``name`` can run here (its packages import): for callers that skip an
    engine rather than stop, such as the tests and the benchmark."""
    try:
        check_engine(name)
    except ValueError:
        return False
    return True


def engine_version(engine: str) -> dict[str, str]:
    """The versions that decide what ``engine`` computes, for the provenance (torch converts the
    network for the other engines, so it is always listed)."""
    check_engine(engine)
    versions = {"torch": torch.__version__}
    for module, dist in _PACKAGES.get(engine, ()):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # imported from elsewhere than a dist
            versions[dist] = str(getattr(_import(engine, module), "__version__", "unknown"))
    return versions


def default_cache_dir() -> Path:
    """``$USDH_ENGINE_CACHE``, else ``~/.cache/usdh/engines``: outside the project's outputs."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "usdh" / "engines"


def model_digest(model: nn.Module) -> str:
    """sha256 of the network's structure (its repr) and every state_dict tensor's name, dtype,
    shape and bytes (in standard layout, so channels-last and NCHW weights digest alike)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- the cache file --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Key:
    """What a converted model depends on; recorded in its cache file and hashed into its name."""

    engine: str
    versions: tuple[tuple[str, str], ...]
    model_digest: str
    input_size: int
    batch_size: int

    def file_name(self, label: str) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()[:24]
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
        return f"{self.engine}-{safe}-{self.input_size}px-b{self.batch_size}-{key}.bin"

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["versions"] = dict(self.versions)
        return out


def _pack(key: _Key, parts: dict[str, bytes]) -> bytes:
    """One file: a magic line, a JSON header line (the key, each part's name and length, the
    payload's sha256), then the parts."""
    payload = b"".join(parts.values())
    header = {
        "key": key.record(),
        "parts": [[name, len(data)] for name, data in parts.items()],  # in payload order
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    return _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _unpack(data: bytes, key: _Key) -> dict[str, bytes]:
    """The parts of a cache file, or ValueError saying why it cannot be used."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a usdh engine cache file")
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        raise ValueError("truncated header")
    try:
        header = json.loads(data[len(_MAGIC) : end])
        recorded, lengths, sha = header["key"], header["parts"], header["payload_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable header ({exc})") from exc
    if recorded != key.record():
        wrong = sorted(k for k in key.record() if recorded.get(k) != key.record()[k])
        raise ValueError(f"stale: its recorded {', '.join(wrong) or 'key'} does not match")
    payload = data[end + 1 :]
    if hashlib.sha256(payload).hexdigest() != sha:
        raise ValueError("its payload does not match its recorded sha256 (truncated or altered)")
    parts, start = {}, 0
    try:
        for name, n in lengths:
            parts[str(name)] = payload[start : start + int(n)]
            start += int(n)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"unreadable header ({exc})") from exc
    if start != len(payload):
        raise ValueError("its parts do not add up to its payload")
    return parts


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- conversion ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _tracing(model: nn.Module) -> Iterator[None]:
    """Eval mode and plain no-grad for the duration of a conversion (tracing fails under
    inference mode), the model's own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes
            yield
    finally:
        model.train(was_training)


def _example(key: _Key) -> torch.Tensor:
    return torch.zeros(key.batch_size, 3, key.input_size, key.input_size)


def _export_onnx(model: nn.Module, key: _Key) -> bytes:
    """The network as ONNX with a static batch, by torch's TorchScript exporter (no onnxscript;
    it needs the onnx package)."""
    _import(key.engine, "onnx")
    buf = io.BytesIO()
    with _tracing(model):
        torch.onnx.export(
            model,
            (_example(key),),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["features"],
            opset_version=_ONNX_OPSET,
        )
    return buf.getvalue()


def _convert_onnxruntime(model: nn.Module, key: _Key, workdir: Path) -> dict[str, bytes]:
    return {"onnx": _export_onnx(model, key)}


def _convert_openvino(model: nn.Module, key: _Key, workdir: Path) -> dict[str, bytes]:
    """ONNX read by OpenVINO's runtime, kept as its IR (reads faster than ONNX). Not
    ``openvino.convert_model``: that traces just as well, but sends usage telemetry unless the
    user opted out, and is no faster."""
    ov = _import("openvino")
    network = ov.Core().read_model(model=_export_onnx(model, key), weights=ov.Tensor(_NO_WEIGHTS))
    xml = workdir / "model.xml"
    # compress_to_fp16=False: save_model would otherwise store the weights as float16
    ov.save_model(network, xml, compress_to_fp16=False)
    return {"xml": xml.read_bytes(), "bin": xml.with_suffix(".bin").read_bytes()}


_CONVERTERS: dict[str, Callable[[nn.Module, _Key, Path], dict[str, bytes]]] = {
    "onnxruntime": _convert_onnxruntime,
    "openvino": _convert_openvino,
}


# -- running ---------------------------------------------------------------------------------------
Runner = Callable[[np.ndarray], np.ndarray]  # one padded (batch_size, 3, s, s) float32 batch


def _load_onnxruntime(parts: dict[str, bytes], threads: int) -> Runner:
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(parts["onnx"], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return run


class _SignalStack(ctypes.Structure):
    """POSIX ``stack_t``, as ``sigaltstack`` reads and writes it."""

    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


@functools.cache
def _libc() -> Any:
    """The C library already loaded in this process (no search), or None where it has no
    ``sigaltstack`` (then there is nothing to guard)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sigaltstack.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@contextlib.contextmanager
def _signal_stack_kept() -> Iterator[None]:
    """Put back this thread's alternate signal stack after OpenVINO compiles a model.

    OpenVINO's CPU plugin (for AMX, openvinotoolkit/openvino#11894) installs a stack of its own
    for each compiled model and, when that model is freed, reinstalls the one it found. With two
    models freed in another order than they were compiled, the thread is left on a stack that
    has been unmapped, and the next signal with a Python handler (SIGCHLD from a DataLoader worker
    or a subprocess, once torch has installed its handler) kills the process with SIGSEGV,
    printing nothing (seen in pytest: the crash came in a later, unrelated test). Reinstalling
    the caller's stack at once means every model finds, and later restores, a stack that lives.
    """
    libc = _libc()
    before = _SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


def _load_openvino(parts: dict[str, bytes], threads: int) -> Runner:
    ov = _import("openvino")
    core = ov.Core()
    weights = np.frombuffer(parts["bin"], dtype=np.uint8).copy()  # the Tensor shares it
    network = core.read_model(model=parts["xml"], weights=ov.Tensor(weights))
    config = {
        "INFERENCE_PRECISION_HINT": "f32",  # not bf16, the default on AVX-512 BF16 / AMX
        "EXECUTION_MODE_HINT": "ACCURACY",  # no lower-precision shortcuts either
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
    }
    with _signal_stack_kept():
        compiled = core.compile_model(network, "CPU", config)
        request = compiled.create_infer_request()
    _check_openvino_f32(compiled)

    def run(x: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: x})[0], dtype=np.float32, copy=True)

    return run


def _check_openvino_f32(compiled: Any) -> None:
    """Raise if the compiled model runs any op below float32 (a silent bf16/f16 would move the
    features by percents)."""
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    low = [] if ("f32" in hint or "float32" in hint) else [f"INFERENCE_PRECISION_HINT={hint}"]
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        for field in ("runtimePrecision", "outputPrecisions"):
            text = info[field].astype(str) if field in info else ""
            bad = [p for p in text.replace(",", " ").split() if p.lower() not in _OV_ALLOWED]
            if bad:
                low.append(f"{op.get_friendly_name()} {field} {','.join(bad)}")
    if low:
        raise _PrecisionError(
            "OpenVINO compiled the network below float32 despite INFERENCE_PRECISION_HINT=f32 "
            f"({'; '.join(low[:5])}); use engine 'eager' and report the OpenVINO version"
        )


_LOADERS: dict[str, Callable[[dict[str, bytes], int], Runner]] = {
    "onnxruntime": _load_onnxruntime,
    "openvino": _load_openvino,
}


def _cached_runner(model: nn.Module, key: _Key, threads: int, cache_dir: Path) -> Runner:
    """The runner of the cached converted model, building (and caching) it when the file is
    missing, corrupt or stale."""
    label = str(getattr(model, "name", type(model).__name__))
    path = cache_dir / key.file_name(label)
    if path.is_file():
        try:
            return _LOADERS[key.engine](_unpack(path.read_bytes(), key), threads)
        except _PrecisionError:
            raise
        except Exception as exc:  # any failure to read or load: rebuild, never use it
            warnings.warn(
                f"engine cache file {path} cannot be used ({type(exc).__name__}: {exc}); "
                "rebuilding it",
                EngineCacheWarning,
                stacklevel=3,
            )
    with tempfile.TemporaryDirectory(prefix="usdh-engine-") as tmp:
        parts = _CONVERTERS[key.engine](model, key, Path(tmp))
    data = _pack(key, parts)
    try:
        _write_atomic(path, data)
    except OSError as exc:
        warnings.warn(
            f"could not write the engine cache file {path} ({exc}); the converted model is "
            "used from memory and rebuilt next time",
            EngineCacheWarning,
            stacklevel=3,
        )
    return _LOADERS[key.engine](_unpack(data, key), threads)


def compile_engine(
    model: nn.Module,
    engine: str,
    *,
    input_size: int,
    batch_size: int,
    threads: int | None,
    cache_dir: Path | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward(x)``: features ``(b, feature_dim)`` float32 of a normalised batch ``x``
    ``(b, 3, input_size, input_size)`` float32 (any memory format, any ``b``), run by ``engine``.

    ``"eager"`` returns ``model`` itself. The others run the converted model (cached, see the
    module docstring) with a static batch of ``batch_size``: shorter batches are padded, longer
    ones run in chunks, so a row's features never depend on its batch. ``threads`` is the
    runtime's thread count (None: torch's current count); results repeat bitwise for a fixed
    count. Only CPU models in float32 can be converted.
    """
    check_engine(engine)
    for name, value in (("input_size", input_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if engine == "eager":
        return model
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError(
            f"engine {engine!r} runs on the CPU: move the model to the CPU or use 'eager'"
        )
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        raise ValueError(f"engine {engine!r} converts float32 models only; use 'eager'")
    n_threads = torch.get_num_threads() if threads is None else threads
    key = _Key(
        engine=engine,
        versions=tuple(sorted(engine_version(engine).items())),
        model_digest=model_digest(model),
        input_size=input_size,
        batch_size=batch_size,
    )
    runner = _cached_runner(
        model, key, n_threads, default_cache_dir() if cache_dir is None else Path(cache_dir)
    )
    shape = (3, input_size, input_size)
    # one batch of zeros: the feature width, and the runtime's lazy set-up out of the first batch
    dim = runner(np.zeros((batch_size, *shape), np.float32)).shape[1]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"engine {engine!r} was compiled for batches (n, {', '.join(map(str, shape))}), "
                f"got {tuple(x.shape)}"
            )
        # NCHW bytes in float32, whatever the caller's layout (extract_features: channels-last)
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        n, rows = batch.shape[0], [np.empty((0, dim), np.float32)]
        for start in range(0, n, batch_size):
            chunk = batch[start : start + batch_size]
            k = chunk.shape[0]
            if k < batch_size:
                chunk = np.concatenate([chunk, np.zeros((batch_size - k, *shape), np.float32)])
            rows.append(runner(np.ascontiguousarray(chunk))[:k])
        out = rows[1] if len(rows) == 2 else np.concatenate(rows)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    return forward
