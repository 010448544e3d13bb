"""Write and read one model version: `.npy` arrays plus `manifest.json`, never pickle.

A version is written under `root/.tmp-<version>-<random>`, fsynced, then renamed to
`root/<version>`, so a reader sees either a complete version or nothing.

Over 350 lines on purpose: one job (the version format: write, fsync and rename, read with
checksums, list and prune), whose parts share its private helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CALLER_FIELDS = ("created_at", "algorithm", "params", "data", "metrics", "cost", "serving")
_CSR_PARTS = ("indptr", "indices", "data")


class CorruptArtifact(Exception):
    """A version on disk that cannot be trusted: missing, truncated, altered or unknown."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class VersionExists(FileExistsError):
    """The version directory is already there; versions are never overwritten."""


@dataclass(frozen=True)
class ArtifactManifest:
    """What `manifest.json` holds: provenance, metrics, cost and one entry per array."""

    version: str
    created_at: str
    algorithm: str
    params: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]
    cost: dict[str, Any]
    arrays: dict[str, dict[str, Any]]
    format_version: int = FORMAT_VERSION
    # Sparse matrices stored as three arrays: prefix -> {"format": "csr", "shape": [rows, cols]}.
    sparse: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How the API ranks this version (shared.serving_strategy.ServingStrategy.to_dict());
    # empty, as in manifests written before strategies existed, means exact scoring.
    serving: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Indented, key-sorted JSON; numpy scalars and arrays become plain numbers and lists."""
        text = json.dumps(asdict(self), indent=2, sort_keys=True, default=_json_default)
        return text.encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ArtifactManifest:
        """Parse a manifest; ValueError when it is not JSON, lacks a field or has another format."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("manifest is not a JSON object")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown format_version {raw.get('format_version')!r}")
        _check_manifest_types(raw)
        # Unknown keys are ignored so that additive fields do not need a new format_version.
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        return cls(**known)


@dataclass(frozen=True)
class LoadedVersion:
    """A verified version: its directory, manifest and read-only (usually memory-mapped) arrays."""

    path: Path
    manifest: ArtifactManifest
    arrays: Mapping[str, np.ndarray]

    def csr(self, prefix: str) -> sp.csr_matrix:
        """The sparse matrix stored under `prefix`, with the shape the manifest recorded."""
        entry = self.manifest.sparse.get(prefix)
        if entry is None:
            raise KeyError(f"no sparse matrix {prefix!r} in version {self.manifest.version}")
        rows, cols = entry["shape"]
        return csr_from_arrays(prefix, self.arrays, (rows, cols))


def _check_manifest_types(raw: dict[str, Any]) -> None:
    """Refuse a manifest whose fields are missing or of the wrong JSON type."""
    for name in ("version", "created_at", "algorithm"):
        if not isinstance(raw.get(name), str):
            raise ValueError(f"manifest field {name!r} must be a string")
    objects = {name: raw.get(name) for name in ("params", "data", "metrics", "cost", "arrays")}
    objects["sparse"] = raw.get("sparse", {})  # optional: absent when nothing sparse was stored
    objects["serving"] = raw.get("serving", {})  # optional: absent in older manifests (exact)
    for name, value in objects.items():
        if not isinstance(value, dict):
            raise ValueError(f"manifest field {name!r} must be an object")
    if not all(isinstance(entry, dict) for entry in raw["arrays"].values()):
        raise ValueError("every entry of 'arrays' must be an object")


def _json_default(value: Any) -> Any:
    """Let numpy values in params and metrics serialise as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def csr_to_arrays(prefix: str, m: sp.spmatrix | sp.sparray) -> dict[str, np.ndarray]:
    """The three arrays of a CSR matrix, named `<prefix>_indptr`, `_indices` and `_data`."""
    csr = sp.csr_matrix(m)
    return {f"{prefix}_{part}": np.asarray(getattr(csr, part)) for part in _CSR_PARTS}


def csr_from_arrays(
    prefix: str, arrays: Mapping[str, np.ndarray], shape: tuple[int, int]
) -> sp.csr_matrix:
    """Rebuild a CSR matrix from its three arrays without copying them."""
    parts = tuple(arrays[f"{prefix}_{part}"] for part in ("data", "indices", "indptr"))
    return sp.csr_matrix(parts, shape=shape, copy=False)


def storable(array: np.ndarray) -> np.ndarray:
    """`array` in a dtype that `.npy` holds without pickle: object arrays of str become '<U..'."""
    if not array.dtype.hasobject:
        return array
    if array.dtype.kind != "O" or not all(isinstance(v, str) for v in array.flat):
        raise TypeError("only object arrays of str can be stored (as fixed-width unicode)")
    return array.astype(str) if array.size else array.astype("<U1")


def _check_name(kind: str, name: str) -> None:
    """Refuse names that could escape the directory or hide among temp dirs."""
    if not _NAME.match(name) or name.startswith(TEMP_PREFIX):
        raise ValueError(f"invalid {kind} name {name!r}")


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Save one array as `<name>.npy`, fsync it, and return its manifest entry."""
    _check_name("array", name)
    array = storable(np.asarray(array))
    path = directory / f"{name}.npy"
    with path.open("xb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {
        "file": path.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "sha256": _sha256(path),
        "bytes": path.stat().st_size,
    }


def _write_manifest(directory: Path, manifest: ArtifactManifest) -> None:
    """Write and fsync `manifest.json`."""
    with (directory / MANIFEST).open("xb") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())


def _build_manifest(
    version: str,
    entries: dict[str, dict[str, Any]],
    sparse_shapes: dict[str, dict[str, Any]],
    fields: dict[str, Any],
) -> ArtifactManifest:
    """Combine the caller's fields with what writing the arrays produced."""
    unknown = set(fields) - set(_CALLER_FIELDS)
    if unknown:
        raise ValueError(f"manifest_fields cannot set {sorted(unknown)}")
    if "algorithm" not in fields:
        raise ValueError("manifest_fields must name the algorithm")
    return ArtifactManifest(
        version=version,
        created_at=fields.get("created_at") or datetime.now(UTC).isoformat(),
        algorithm=fields["algorithm"],
        params=dict(fields.get("params", {})),
        data=dict(fields.get("data", {})),
        metrics=dict(fields.get("metrics", {})),
        cost=dict(fields.get("cost", {})),
        arrays=entries,
        sparse=sparse_shapes,
        serving=dict(fields.get("serving", {})),
    )


def _expand_sparse(
    arrays: Mapping[str, np.ndarray | sp.spmatrix | sp.sparray],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Split sparse values into their CSR arrays and record their shapes."""
    dense: dict[str, np.ndarray] = {}
    shapes: dict[str, dict[str, Any]] = {}
    for name, value in arrays.items():
        if sp.issparse(value):
            dense.update(csr_to_arrays(name, value))
            shapes[name] = {"format": "csr", "shape": [int(n) for n in value.shape]}
        else:
            dense[name] = np.asarray(value)
    return dense, shapes


def write_version(
    root: Path,
    version: str,
    arrays: Mapping[str, np.ndarray | sp.spmatrix | sp.sparray],
    *,
    manifest_fields: dict[str, Any],
) -> Path:
    """Write a complete version atomically and return `root/<version>`.

    Sparse values are stored as `<name>_indptr/_indices/_data` with their shape in the
    manifest (read back with `LoadedVersion.csr(name)`). Raises VersionExists if the
    version is already there; on any failure nothing is left behind.
    """
    _check_name("version", version)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise VersionExists(f"version {version} already exists in {root}")
    temp = root / f"{TEMP_PREFIX}{version}-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        dense, shapes = _expand_sparse(arrays)
        entries = {name: _write_array(temp, name, arr) for name, arr in dense.items()}
        _write_manifest(temp, _build_manifest(version, entries, shapes, manifest_fields))
        _fsync_dir(temp)
        # rename() would silently replace an empty directory of the same name: check again.
        if final.exists():
            raise VersionExists(f"version {version} already exists in {root}")
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return final


def _read_manifest(path: Path) -> ArtifactManifest:
    """Load and parse `manifest.json`, as CorruptArtifact on any problem."""
    try:
        raw = (path / MANIFEST).read_bytes()
    except OSError as exc:
        raise CorruptArtifact(path, f"{MANIFEST} unreadable: {exc.strerror or exc}") from exc
    try:
        return ArtifactManifest.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise CorruptArtifact(path, f"bad {MANIFEST}: {exc}") from exc


def _load_array(
    path: Path, name: str, entry: Mapping[str, Any], *, mmap: bool, verify: bool
) -> np.ndarray:
    """Check one listed file against its manifest entry and load it without pickle."""
    file_name = str(entry.get("file", ""))
    if not _NAME.match(file_name) or not file_name.endswith(".npy"):
        raise CorruptArtifact(path, f"array {name!r} has an invalid file name {file_name!r}")
    file = path / file_name
    if not file.is_file():
        raise CorruptArtifact(file, f"{file_name} is missing")
    size = file.stat().st_size
    if size != entry.get("bytes"):
        expected = entry.get("bytes")
        raise CorruptArtifact(file, f"{file_name} has {size} bytes, manifest says {expected}")
    if verify and _sha256(file) != entry.get("sha256"):
        raise CorruptArtifact(file, f"{file_name} sha256 does not match the manifest")
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptArtifact(file, f"{file_name} is not a readable .npy file: {exc}") from exc
    found = (array.dtype.str, list(array.shape))
    expected = (entry.get("dtype"), entry.get("shape"))
    if found != expected:
        raise CorruptArtifact(file, f"{file_name} is {found}, manifest says {expected}")
    if not mmap:
        array.flags.writeable = False
    return array


def read_version(path: Path, *, mmap: bool = True, verify: bool = True) -> LoadedVersion:
    """Load a version, checking every array's size, dtype and shape (and sha256 if `verify`).

    Raises CorruptArtifact naming the offending file and the reason.
    """
    manifest = _read_manifest(path)
    if manifest.version != path.name:
        raise CorruptArtifact(path, f"{MANIFEST} describes version {manifest.version!r}")
    arrays = {
        name: _load_array(path, name, entry, mmap=mmap, verify=verify)
        for name, entry in manifest.arrays.items()
    }
    return LoadedVersion(path=path, manifest=manifest, arrays=MappingProxyType(arrays))


def list_versions(root: Path) -> list[str]:
    """Names of the complete versions under `root` (those with a manifest), sorted."""
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if not entry.name.startswith(".") and (entry / MANIFEST).is_file()
    )


def remove_stale_temp_dirs(root: Path, *, older_than_seconds: float = 3600) -> int:
    """Delete temp dirs left by crashed writers; young ones may belong to a writer still running."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for entry in root.iterdir():
        if entry.name.startswith(TEMP_PREFIX) and entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def _remove_version(root: Path, name: str) -> None:
    """Hide a version with one rename, then delete it; a crash leaves only a temp dir."""
    doomed = root / f"{TEMP_PREFIX}{name}-deleted-{secrets.token_hex(4)}"
    os.rename(root / name, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_versions(root: Path, *, keep_last: int, protect: Collection[str]) -> list[str]:
    """Delete the oldest complete versions beyond the newest `keep_last`, sparing `protect`."""
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    versions = list_versions(root)
    older = versions[: max(len(versions) - keep_last, 0)]
    doomed = [name for name in older if name not in protect]
    for name in doomed:
        _remove_version(root, name)
    return doomed


def directory_size(path: Path) -> int:
    """Bytes in the regular files under `path` (or of `path` itself), symlinks not followed."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            file = Path(dirpath) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total
