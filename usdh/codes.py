"""The one binary code format of the suite.

Codes are packed ``uint8`` rows, ``n_bits // 8`` bytes each, in :func:`numpy.packbits` bit order
(``bitorder="big"``): bit ``i`` of a code is bit ``7 - i % 8`` of byte ``i // 8`` (the first bit is
the most significant bit of byte 0). Code lengths are multiples of 8.

``faiss.IndexBinaryFlat`` takes any ``(n, n_bits // 8)`` uint8 rows and only XORs and popcounts
them, so our codes can be searched by faiss directly and every Hamming distance comes out the same.
But faiss's own packer (``faiss.fvecs2bitvecs``, used by its binarising indexes) puts bit ``i`` in
bit ``i % 8`` of byte ``i // 8`` (the first bit is the *least* significant: ``bitorder="little"``).
Codes packed by the two cannot be mixed in one index: convert with :func:`swap_bitorder` (the same
operation both ways), or pack with ``pack_bits(bits, bitorder="little")``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "check_codes",
    "check_n_bits",
    "pack_bits",
    "swap_bitorder",
    "to_words",
    "unpack_bits",
]


def check_n_bits(n_bits: int) -> int:
    """Validate a code length: a positive multiple of 8 (whole bytes, as faiss requires)."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise ValueError(f"n_bits must be an integer, got {n_bits!r} ({type(n_bits).__name__})")
    n_bits = int(n_bits)
    if n_bits <= 0 or n_bits % 8:
        raise ValueError(
            f"n_bits must be a positive multiple of 8 (codes are packed into whole bytes), "
            f"got {n_bits}; use e.g. 16, 32, 64 or 128"
        )
    return n_bits


def check_codes(
    codes: ArrayLike, name: str = "codes", n_bits: int | None = None, allow_empty: bool = False
) -> NDArray[np.uint8]:
    """Return ``codes`` as a C-contiguous 2-D uint8 array, or raise a ValueError naming the problem.

    Bits that are still unpacked (0/1 or +-1 per column) are refused rather than packed silently: a
    32-column 0/1 matrix would otherwise be read as 256-bit codes.
    """
    arr = np.asarray(codes)
    if arr.dtype != np.uint8:
        raise ValueError(
            f"{name} must be packed uint8 codes (numpy.packbits order), got dtype {arr.dtype}; "
            f"pack 0/1 or +-1 bits with usdh.codes.pack_bits"
        )
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_codes, n_bits // 8), got shape {arr.shape}; "
            f"reshape a single code to (1, n_bytes)"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero bytes per code (shape {arr.shape})")
    if n_bits is not None and arr.shape[1] * 8 != n_bits:
        raise ValueError(
            f"{name} has {arr.shape[1]} bytes per row ({arr.shape[1] * 8} bits), expected "
            f"{n_bits // 8} bytes for {n_bits}-bit codes"
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (0 codes); at least one code is needed")
    return np.ascontiguousarray(arr)


def pack_bits(bits: ArrayLike, bitorder: str = "big") -> NDArray[np.uint8]:
    """Pack a ``(n, n_bits)`` array of bits into codes; a bit is 1 where the value is positive.

    This accepts 0/1, booleans, and +-1 (sign) codes alike, which is what every hasher produces
    before packing. NaN is refused: its sign is undefined. ``bitorder="little"`` gives faiss's own
    packing (``faiss.fvecs2bitvecs``); the suite's format is ``"big"``.
    """
    if bitorder not in ("big", "little"):
        raise ValueError(
            f"bitorder must be 'big' (the suite's) or 'little' (faiss's), got {bitorder!r}"
        )
    arr = np.asarray(bits)
    if arr.ndim != 2:
        raise ValueError(f"bits must be a 2-D array (n_codes, n_bits), got shape {arr.shape}")
    check_n_bits(arr.shape[1])
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("bits contain NaN or infinite values; their sign is undefined")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"bits must be numeric or boolean, got dtype {arr.dtype}")
    return np.packbits(arr > 0, axis=1, bitorder=bitorder)


#: byte -> the byte with its 8 bits in reverse order
_REVERSED = np.packbits(np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)[:, ::-1])


def swap_bitorder(codes: ArrayLike) -> NDArray[np.uint8]:
    """Codes in the other bit order: ours (``numpy.packbits``, first bit most significant) to
    faiss's ``fvecs2bitvecs`` packing (first bit least significant), and back."""
    return _REVERSED[check_codes(codes, allow_empty=True)]


def unpack_bits(codes: ArrayLike) -> NDArray[np.uint8]:
    """Unpack codes into a ``(n, n_bits)`` array of 0/1 (uint8)."""
    arr = check_codes(codes, allow_empty=True)
    return np.unpackbits(arr, axis=1)


def to_words(codes: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """View codes as rows of 64-bit words (zero-padded) for popcount kernels.

    Padding with zero bytes leaves every Hamming distance unchanged; the byte order inside a word
    does not matter for XOR and popcount.
    """
    arr = check_codes(codes, allow_empty=True)
    n, n_bytes = arr.shape
    n_words = -(-n_bytes // 8)
    if n_bytes == n_words * 8:
        return arr.view(np.uint64)
    padded = np.zeros((n, n_words * 8), dtype=np.uint8)
    padded[:, :n_bytes] = arr
    return padded.view(np.uint64)
