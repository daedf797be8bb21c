"""Reading a finished dump: :func:`load_dump` and the :class:`Dump` mapping.

For notebooks: arrays open lazily as read-only memory maps, never with pickle.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from kerinspect.dump.layout import DUMP_SCHEMA_VERSION, MANIFEST, is_own_file, read_manifest_at, show_path
from kerinspect.errors import InputFileError, escape_text
from kerinspect.safefs import os_reason, sha256_at, split_rel

__all__ = ["Dump", "load_dump"]


class Dump(Mapping[str, np.ndarray]):
    """A finished dump: its manifest and its arrays, opened lazily.

    A mapping from tensor key to array: the key is the layer path for a
    single-output call (``encoder/dense``, ``shared@1``) and ``path:output`` for
    each output of a multi-output one (``lstm:state_h``), as in ``summary``. File
    names work as keys too. Arrays are read-only memory maps
    (``np.load(..., mmap_mode="r", allow_pickle=False)``).

    Attributes:
        path: the dump directory.
        manifest: the parsed ``manifest.json``.
    """

    def __init__(self, path: str, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._by_key: dict[str, dict[str, Any]] = {}
        for entry in manifest["tensors"]:
            self._by_key.setdefault(entry["key"], entry)
        self._by_file = {e["file"]: e for e in manifest["tensors"]}
        self._cache: dict[str, np.ndarray] = {}

    @property
    def tensors(self) -> list[dict[str, Any]]:
        """The manifest's tensor entries, in graph order."""
        return list(self.manifest["tensors"])

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """The inputs the dump was made from, by input name (feed them back to
        ``dump_activations`` or ``inspect_model`` to reproduce it)."""
        return {e["name"]: self._load(e["file"]) for e in self.manifest["inputs"]}

    def entry(self, key: str) -> dict[str, Any]:
        """The manifest entry of a tensor key or file name."""
        if key in self._by_key:
            return self._by_key[key]
        if key in self._by_file:
            return self._by_file[key]
        raise KeyError(key)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._load(self.entry(key)["file"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def _load(self, rel: str) -> np.ndarray:
        if rel not in self._cache:
            full = os.path.join(self.path, *rel.split("/"))
            try:
                self._cache[rel] = np.load(full, mmap_mode="r", allow_pickle=False)
            except ValueError:  # an empty array cannot be memory-mapped
                self._cache[rel] = np.load(full, allow_pickle=False)
        return self._cache[rel]

    def __repr__(self) -> str:
        return f"Dump({self.path!r}, {len(self.manifest['tensors'])} tensors, {self.manifest['samples']} samples)"


def load_dump(path: str | os.PathLike[str], *, verify: bool = False) -> Dump:
    """Open a dump written by ``kerinspect dump`` / ``dump_activations``.

    Reads only ``manifest.json`` at once; arrays open on access. Every file the
    manifest names must be kerinspect's own file-name pattern and a regular file
    inside the directory (not a symlink), so a hand-edited or hostile manifest
    cannot point elsewhere.

    Args:
        path: the dump directory.
        verify: also check every file's SHA-256 against the manifest (reads all data).

    Returns:
        A :class:`Dump`.

    Raises:
        InputFileError: not a complete kerinspect dump, or a file fails the checks (exit 3).
    """
    p = os.fspath(path)
    shown = show_path(p)

    def bad(what: str, rule: str = "bad-dump") -> InputFileError:
        return InputFileError(f"Not a valid kerinspect dump: {what}. Received: path={shown}", rule=rule)

    try:
        dfd = os.open(p, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise bad(f"cannot open the directory ({os_reason(e)})", "dump-not-found") from None
    try:
        try:
            manifest = read_manifest_at(dfd)
        except FileNotFoundError:
            raise bad(f"no {MANIFEST} (an incomplete or interrupted dump?)") from None
        except (OSError, ValueError) as err:
            raise bad(f"unreadable {MANIFEST} ({escape_text(str(err), 100)})") from None
        if manifest.get("schema_version") != DUMP_SCHEMA_VERSION:
            raise bad(f"schema_version {manifest.get('schema_version')!r} is not {DUMP_SCHEMA_VERSION}")
        for group in ("tensors", "inputs"):
            entries = manifest.get(group)
            if not isinstance(entries, list) or not all(isinstance(x, dict) for x in entries):
                raise bad(f"{group} is not a list of objects")
            for entry in entries:
                rel = entry.get("file")
                if not isinstance(rel, str) or not is_own_file(rel):
                    raise bad(f"file name {escape_text(str(rel), 100)!r} is not kerinspect's")
                head, _ = split_rel(rel)
                try:
                    fst = os.stat(rel, dir_fd=dfd, follow_symlinks=False)
                except OSError as err:
                    raise bad(f"{rel!r} is missing ({os_reason(err)})") from None
                if head:
                    hst = os.stat(head, dir_fd=dfd, follow_symlinks=False)
                    if not stat.S_ISDIR(hst.st_mode):
                        raise bad(f"{head!r} is not a directory")
                if not stat.S_ISREG(fst.st_mode):
                    raise bad(f"{rel!r} is not a regular file")
                if group == "tensors" and not isinstance(entry.get("key"), str):
                    raise bad(f"{rel!r} has no key")
                if verify and entry.get("sha256") != sha256_at(dfd, rel):
                    raise bad(f"{rel!r} does not match its SHA-256")
    finally:
        os.close(dfd)
    return Dump(p, manifest)
