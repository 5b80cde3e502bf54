"""Files, archives and checksums: reading folders and tar archives alike, writing folders whole.

Archives are read in one sequential pass without unpacking (a gzip stream cannot be seeked
cheaply, and an unpacked copy of CIFAR would be 60,000 files): the encoded bytes of the wanted
members are kept in memory (55 MB for CIFAR-10's JPEGs) and decoded on demand.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from usdh.data.dataset import EncodedStore, FileStore, ImageStore
from usdh.data.errors import DataError, DataNotFoundError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

#: sha256 of the archives we know by name (the copies in ../shared/data, see its SHA256SUMS)
KNOWN_SHA256 = {
    "cifar10-jpeg.tar.gz": "eba1596704d4ee8024ed086f561a720831e080cc12127f149d5a623d4b8c53fd",
    "oxford17-256.tar.gz": "0eba6d49e942ea32b3b14603ec8859310a0a9da6408f3c4702e42be902d3facd",
    "fashion-mnist.tar": "38eeda4388ce318b8b378f4b190cc6497d03a376b4b318d62ed158556ac1ec79",
}
#: their sizes in bytes: a file of one of these sizes under another name is checked against that
#: archive's digest too (a renamed copy must not escape the check)
KNOWN_SIZES = {
    "cifar10-jpeg.tar.gz": 19432167,
    "oxford17-256.tar.gz": 35210731,
    "fashion-mnist.tar": 30883840,
}


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: image_2 before image_10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def is_image_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _sums_beside(path: Path) -> str | None:
    """The sha256 a ``SHA256SUMS`` file beside ``path`` lists for it, if any."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return None
    try:
        lines = sums.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0].lower()
    return None


def verify_archive(
    path: Path, *, sha256: str | None = None, md5: str | None = None, what: str = "archive"
) -> str:
    """Check an archive against the expected checksum and return its sha256.

    The expected sha256 is ``sha256`` if given, else the one a ``SHA256SUMS`` file beside the
    archive lists, else the one we know for that file name, else, for a file of exactly the size
    of an archive we know, that archive's (a renamed copy); ``md5`` (CIFAR's canonical archive, as
    torchvision checks it) is checked as well when given. Nothing expected: the archive's own
    integrity checks (gzip's CRC, :func:`read_tar`) are all there is.
    """
    digest = file_digest(path, "sha256")
    checks: list[tuple[str, str, str, str]] = []
    expected = sha256 or _sums_beside(path) or KNOWN_SHA256.get(path.name)
    if not expected and digest not in KNOWN_SHA256.values():
        size = path.stat().st_size
        same = [name for name, n in KNOWN_SIZES.items() if n == size]
        if same:
            expected, what = KNOWN_SHA256[same[0]], f"{what} (a copy of {same[0]}, by its size)"
    if expected:
        checks.append(("sha256", expected.lower(), digest, "sha256sum"))
    if md5:
        checks.append(("md5", md5.lower(), file_digest(path, "md5"), "md5sum"))
    for algo, want, got, tool in checks:
        if want != got:
            raise DataError(
                f"checksum mismatch for {what} {path}: {algo} is {got}, expected {want}. The file "
                f"is corrupt, incomplete or not the expected release: delete it and copy or "
                f"download it again (check with `{tool}`)"
            )
    return digest


def _clean_member_name(name: str) -> str | None:
    """A tar member's path as a clean relative POSIX path, or None to skip it."""
    pure = PurePosixPath(name)
    if pure.is_absolute():
        return None
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files, macOS resource forks
    return "/".join(parts)


_MAGIC = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


def _decompressed(path: Path) -> IO[bytes]:
    """The archive's tar stream, through a reader that checks the compression's own integrity
    (gzip's CRC-32 and length, bzip2's and xz's checks) when read to the end."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return opener(path, "rb")
    return open(path, "rb")


def read_tar(path: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """The bytes of every regular member whose clean name passes ``keep``, in one pass.

    The stream is read to its very end, past tar's end-of-archive blocks, so a corrupt byte
    anywhere in a compressed archive fails its checksum here: the archive is blamed, not an image
    decoded later.
    """
    out: dict[str, bytes] = {}
    try:
        with _decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                name = _clean_member_name(member.name)
                if name is None or not keep(name):
                    continue
                fh = tf.extractfile(member)
                if fh is None:
                    continue
                data = fh.read()
                if len(data) != member.size:
                    raise EOFError(f"member {name} is truncated")
                out[name] = data
            while raw.read(1 << 20):  # the rest: the compressed stream's integrity check
                pass
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataNotFoundError(f"{path} does not exist") from exc
        raise DataError(
            f"cannot read archive {path}: {exc}. It is corrupt or truncated: copy or download "
            f"it again (compare its checksum, e.g. `sha256sum -c SHA256SUMS`)"
        ) from exc
    return out


@dataclass
class FileTree:
    """The files under a folder or inside an archive, by relative POSIX path, sorted."""

    kind: str  # "folder" or "archive"
    location: Path
    paths: list[str]
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)  # archive contents
    sha256: str | None = None  # of the archive

    def store(self, paths: Sequence[str], prefix: str = "") -> ImageStore:
        """An image store over ``paths`` (relative to ``prefix``), in the order given."""
        full = [prefix + p for p in paths]
        if self.kind == "folder":
            return FileStore(self.location, full)
        return EncodedStore.from_blobs([self.blobs[p] for p in full], full, str(self.location))

    def origin(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {"kind": self.kind, "location": str(self.location)}
        if self.kind == "archive":
            out["archive"] = self.location.name
            out["archive_sha256"] = self.sha256
        return out


def folder_tree(root: Path, keep: Callable[[str], bool] = is_image_name) -> FileTree:
    """Every file under ``root`` passing ``keep`` (hidden files and folders skipped)."""
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder")
    paths: list[str] = []
    seen: set[str] = set()  # symlinked folders are followed, each real folder once (no cycles)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        rel = Path(dirpath).relative_to(root).as_posix()
        base = "" if rel == "." else rel + "/"
        paths.extend(base + f for f in filenames if not f.startswith(".") and keep(base + f))
    paths.sort()
    return FileTree("folder", root, paths)


def archive_tree(
    path: Path, keep: Callable[[str], bool] = is_image_name, *, sha256: str | None = None
) -> FileTree:
    """The members of a tar archive passing ``keep``, read into memory, after a checksum check."""
    digest = verify_archive(path, sha256=sha256)
    blobs = read_tar(path, keep)
    return FileTree("archive", path, sorted(blobs), blobs, digest)


def open_tree(path: Path, keep: Callable[[str], bool] = is_image_name) -> FileTree:
    """A folder or an archive, whichever ``path`` is."""
    if path.is_dir():
        return folder_tree(path, keep)
    if is_archive(path):
        return archive_tree(path, keep)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist")
    raise DataError(f"{path} is neither a folder nor a tar archive ({', '.join(ARCHIVE_SUFFIXES)})")
