"""Tests for model version artifacts: round trips, integrity checks, atomic writes, pruning."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from shared.artifacts import (
    MANIFEST,
    ArtifactManifest,
    CorruptArtifact,
    VersionExists,
    csr_from_arrays,
    csr_to_arrays,
    directory_size,
    list_versions,
    prune_versions,
    read_version,
    remove_stale_temp_dirs,
    write_version,
)

FIELDS: dict[str, Any] = {
    "algorithm": "als",
    "params": {"factors": np.int64(8), "regularization": 0.01},
    "data": {"events": 1234, "window": ["2026-11-01", "2026-11-26"]},
    "metrics": {"ndcg@10": np.float32(0.25)},
    "cost": {},
}


def _arrays() -> dict[str, np.ndarray]:
    """A small model: float32 factors, int popularity and string id maps."""
    rng = np.random.default_rng(0)
    return {
        "user_factors": rng.standard_normal((5, 3)).astype(np.float32),
        "item_factors": rng.standard_normal((4, 3)).astype(np.float32),
        "popularity": np.array([3, 1, 0, 7], dtype=np.int64),
        "user_ids": np.array(["u1", "u22", "u333", "u4", "u5"]),
        "item_ids": np.array(["sku-1", "sku-2", "sku-3", "sku-4"], dtype=object),
    }


def _seen() -> sp.csr_matrix:
    """A 5 x 4 seen-items matrix with an empty row."""
    rows, cols = np.array([0, 0, 2, 4]), np.array([1, 3, 0, 2])
    return sp.csr_matrix((np.ones(4, dtype=np.float32), (rows, cols)), shape=(5, 4))


def _write(root: Path, version: str = "v1", **extra: Any) -> Path:
    """Write the small model as `version`."""
    return write_version(root, version, {**_arrays(), **extra}, manifest_fields=FIELDS)


def _leftovers(root: Path) -> list[str]:
    """Everything under `root`, temp dirs included."""
    return sorted(entry.name for entry in root.iterdir()) if root.exists() else []


def test_round_trip_dense_string_and_sparse(tmp_path: Path) -> None:
    path = _write(tmp_path, "v1", seen=_seen())
    loaded = read_version(path)
    for name, array in _arrays().items():
        expected = array.astype(str) if array.dtype == object else array
        np.testing.assert_array_equal(loaded.arrays[name], expected)
    assert loaded.arrays["user_factors"].dtype == np.float32
    assert loaded.arrays["item_ids"].dtype.kind == "U"
    assert (loaded.csr("seen") != _seen()).nnz == 0
    assert loaded.csr("seen").shape == (5, 4)
    assert loaded.manifest.params == {"factors": 8, "regularization": 0.01}
    assert loaded.manifest.version == "v1"
    assert loaded.manifest.algorithm == "als"


def test_csr_helpers_round_trip() -> None:
    arrays = csr_to_arrays("seen", _seen())
    assert sorted(arrays) == ["seen_data", "seen_indices", "seen_indptr"]
    assert (csr_from_arrays("seen", arrays, (5, 4)) != _seen()).nnz == 0


def test_mmap_is_read_only_memmap(tmp_path: Path) -> None:
    loaded = read_version(_write(tmp_path))
    factors = loaded.arrays["user_factors"]
    assert isinstance(factors, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        factors[0, 0] = 1.0


def test_without_mmap_arrays_are_in_memory_and_read_only(tmp_path: Path) -> None:
    factors = read_version(_write(tmp_path), mmap=False).arrays["user_factors"]
    assert not isinstance(factors, np.memmap)
    assert not factors.flags.writeable


def test_every_file_loads_without_pickle(tmp_path: Path) -> None:
    path = _write(tmp_path, seen=_seen())
    for file in path.glob("*.npy"):
        array = np.load(file, allow_pickle=False)
        assert array.dtype != object
    manifest = json.loads((path / MANIFEST).read_bytes())
    assert manifest["arrays"]["item_ids"]["dtype"] == "<U5"


def test_object_array_of_non_strings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="object arrays"):
        _write(tmp_path, x=np.array([1, None], dtype=object))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_array_file_is_corrupt(tmp_path: Path, damage: str) -> None:
    file = _write(tmp_path) / "item_factors.npy"
    raw = bytearray(file.read_bytes())
    if damage == "truncate":
        del raw[-5:]
    else:
        raw[-1] ^= 0x01
    file.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifact, match=r"item_factors\.npy") as info:
        read_version(file.parent)
    assert info.value.path == file


def test_truncation_is_caught_without_checksums(tmp_path: Path) -> None:
    file = _write(tmp_path) / "popularity.npy"
    file.write_bytes(file.read_bytes()[:-8])
    with pytest.raises(CorruptArtifact, match="bytes"):
        read_version(file.parent, verify=False)


def test_missing_manifest_or_file_is_corrupt(tmp_path: Path) -> None:
    path = _write(tmp_path)
    (path / "user_ids.npy").unlink()
    with pytest.raises(CorruptArtifact, match=r"user_ids\.npy is missing"):
        read_version(path)
    (path / MANIFEST).unlink()
    with pytest.raises(CorruptArtifact, match=r"manifest\.json unreadable"):
        read_version(path)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: b"{not json", r"bad manifest\.json"),
        (lambda m: json.dumps({**m, "format_version": 2}).encode(), "format_version"),
        (lambda m: json.dumps({**m, "arrays": []}).encode(), "'arrays'"),
        (lambda m: json.dumps({**m, "algorithm": None}).encode(), "'algorithm'"),
        (lambda m: json.dumps({k: v for k, v in m.items() if k != "cost"}).encode(), "'cost'"),
        (lambda m: json.dumps({**m, "version": "v9"}).encode(), "describes version"),
    ],
)
def test_bad_manifest_is_corrupt(tmp_path: Path, edit: Any, reason: str) -> None:
    path = _write(tmp_path)
    manifest = json.loads((path / MANIFEST).read_bytes())
    (path / MANIFEST).write_bytes(edit(manifest))
    with pytest.raises(CorruptArtifact, match=reason):
        read_version(path)


def test_dtype_mismatch_is_corrupt(tmp_path: Path) -> None:
    path = _write(tmp_path)
    manifest = json.loads((path / MANIFEST).read_bytes())
    manifest["arrays"]["popularity"]["dtype"] = "<i4"
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifact, match=r"popularity\.npy is"):
        read_version(path)


def test_manifest_json_round_trip() -> None:
    manifest = ArtifactManifest("v1", "2026-11-26T05:30:00+00:00", "als", {}, {}, {}, {}, {})
    assert ArtifactManifest.from_json(manifest.to_json()) == manifest


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    path = _write(tmp_path)
    before = (path / MANIFEST).read_bytes()
    with pytest.raises(VersionExists):
        _write(tmp_path)
    assert (path / MANIFEST).read_bytes() == before
    assert _leftovers(tmp_path) == ["v1"]


def test_failing_array_leaves_nothing(tmp_path: Path) -> None:
    unsaveable = np.array([(1, object())], dtype=[("a", "i4"), ("b", "O")])
    with pytest.raises(TypeError):
        _write(tmp_path, bad=unsaveable)
    assert _leftovers(tmp_path) == []


def test_failing_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_rename(src: Any, dst: Any) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk went away"):
        _write(tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("version", ["", "../escape", ".tmp-v1", "a/b"])
def test_bad_version_names_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(ValueError, match="invalid version"):
        write_version(tmp_path, version, {}, manifest_fields=FIELDS)


def test_manifest_fields_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot set"):
        write_version(tmp_path, "v1", {}, manifest_fields={**FIELDS, "version": "v2"})
    with pytest.raises(ValueError, match="algorithm"):
        write_version(tmp_path, "v1", {}, manifest_fields={})
    assert _leftovers(tmp_path) == []


def test_list_ignores_temp_and_incomplete_dirs(tmp_path: Path) -> None:
    _write(tmp_path, "v2")
    _write(tmp_path, "v1")
    (tmp_path / ".tmp-v3-abcd").mkdir()
    (tmp_path / "v4").mkdir()
    assert list_versions(tmp_path) == ["v1", "v2"]
    assert list_versions(tmp_path / "absent") == []


def test_remove_stale_temp_dirs_only_old_ones(tmp_path: Path) -> None:
    old, young = tmp_path / ".tmp-v1-aaaa", tmp_path / ".tmp-v2-bbbb"
    for directory in (old, young):
        directory.mkdir()
        (directory / "x.npy").write_bytes(b"x")
    hour_ago = time.time() - 7200
    os.utime(old, (hour_ago, hour_ago))
    _write(tmp_path, "v0")
    assert remove_stale_temp_dirs(tmp_path, older_than_seconds=3600) == 1
    assert _leftovers(tmp_path) == [".tmp-v2-bbbb", "v0"]


def test_prune_keeps_protected_and_last_n(tmp_path: Path) -> None:
    for version in ("v1", "v2", "v3", "v4", "v5"):
        _write(tmp_path, version)
    deleted = prune_versions(tmp_path, keep_last=2, protect={"v2"})
    assert deleted == ["v1", "v3"]
    assert list_versions(tmp_path) == ["v2", "v4", "v5"]
    assert _leftovers(tmp_path) == ["v2", "v4", "v5"]
    assert prune_versions(tmp_path, keep_last=10, protect=()) == []
    with pytest.raises(ValueError, match="keep_last"):
        prune_versions(tmp_path, keep_last=-1, protect=())


def test_directory_size_counts_every_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    expected = sum(file.stat().st_size for file in path.iterdir())
    assert directory_size(path) == expected
    assert directory_size(path / MANIFEST) == (path / MANIFEST).stat().st_size
