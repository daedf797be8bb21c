"""Phase 1 of a dump, in the parent (no TensorFlow, no numpy): lock down ``DIR``.

Refuse a symlink, a non-empty directory unless ``overwrite``, and with
``overwrite`` anything but kerinspect's own previous dump; create a private
staging directory inside ``DIR`` (so the final renames stay on one filesystem)
and return the *plan*, plain JSON-able data for the other phases.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from kerinspect.dump.layout import (
    DEFAULT_MAX_BYTES,
    INPUTS_DIR,
    MANIFEST,
    STAGING_PREFIX,
    is_own_file,
    read_manifest_at,
    received_out,
    show_path,
)
from kerinspect.errors import InputFileError, OutputError, UsageError, escape_text, msg
from kerinspect.safefs import open_dir, os_reason

__all__ = ["file_sha256", "prepare_dump"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a regular file, read in chunks. Opened non-blocking and checked
    with ``fstat``, so a FIFO put in the model's place cannot hang the parent.

    Raises:
        InputFileError: the file cannot be read, or is no longer a regular file.
    """
    shown = escape_text(os.fspath(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputFileError(
                    f"The model is no longer a regular file. Received: path={shown}", rule="not-a-file"
                )
            h = hashlib.file_digest(f, "sha256")
    except OSError as e:
        raise InputFileError(
            f"Cannot read the model file: {os_reason(e)}. Received: path={shown}", rule="model-unreadable"
        ) from None
    return h.hexdigest()


def prepare_dump(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    layers: Sequence[str] = (),
    model_path: str | None = None,
    model_format: str = "in-memory",
    model_sha256: str | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and lock down the output directory; create the staging directory.

    Never imports TensorFlow. ``DIR`` is created with ``mkdir`` (not its parents)
    if missing. An existing ``DIR`` must be a real directory (not a symlink) and
    empty, or, with ``overwrite``, hold nothing but a previous kerinspect dump
    (the files its ``manifest.json`` lists, none of them a symlink).

    Args:
        out: the output directory.
        overwrite: allow replacing a previous kerinspect dump in ``out``.
        max_bytes: most bytes the write phase may write.
        layers: glob patterns on layer paths; empty selects every layer call.
        model_path: the model file as the user named it, for the manifest (None: in-memory).
        model_sha256: the SHA-256 of the bytes that were loaded (the snapshot's); when
            None, ``model_path`` is hashed here.
        model_format: ``"keras"``, ``"h5"`` or ``"in-memory"``, for the manifest.
        run: plain data describing the run (inputs, seed...), copied to the manifest.

    Returns:
        The plan: a JSON-able dict for :func:`publish_dump` and :func:`abort_dump`.
        ``plan["write"]`` is all :func:`write_dump` needs (it names only the
        staging directory).

    Raises:
        OutputError: the directory is unusable or refused (exit 7).
        UsageError: bad arguments.
    """
    raw = os.fspath(out)
    if not raw:
        raise UsageError(msg("{out} must name a directory"))
    if int(max_bytes) < 1:
        raise UsageError(
            msg("{max_bytes} must be at least 1. Received: {max_bytes}={value}", value=max_bytes)
        )
    # Read the model before touching the filesystem, so a failure leaves nothing behind.
    model: dict[str, Any] = {"path": model_path, "sha256": None, "format": model_format}
    if model_path is not None:
        model["sha256"] = model_sha256 or file_sha256(model_path)
    path = os.path.abspath(raw)
    shown = show_path(raw)
    created = False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o755)
            created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise OutputError(
                f"Cannot create the output directory: {os_reason(e)}." + received_out(shown),
                rule="out-not-writable",
                hint="its parent directory must exist and be writable",
            ) from None
        st = os.lstat(path)
    except OSError as e:
        raise OutputError(
            f"Cannot access the output directory: {os_reason(e)}." + received_out(shown),
            rule="out-not-writable",
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            "The output directory is a symbolic link; refusing to write through it." + received_out(shown),
            rule="out-symlink",
            hint="pass the real directory",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(
            "The output path exists and is not a directory." + received_out(shown), rule="out-not-dir"
        )
    try:
        dfd = open_dir(path, [st.st_dev, st.st_ino])
    except OSError as e:
        raise OutputError(
            f"Cannot open the output directory: {os_reason(e)}." + received_out(shown),
            rule="out-not-writable",
        ) from None
    try:
        try:
            previous = _previous_dump(dfd, shown, overwrite)
        except OSError as e:
            raise OutputError(
                f"Cannot read the output directory: {os_reason(e)}." + received_out(shown),
                rule="out-not-writable",
            ) from None
        staging = STAGING_PREFIX + secrets.token_hex(8)
        try:
            os.mkdir(staging, 0o700, dir_fd=dfd)
            sst = os.stat(staging, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            raise OutputError(
                f"Cannot write in the output directory: {os_reason(e)}." + received_out(shown),
                rule="out-not-writable",
            ) from None
    except BaseException:
        os.close(dfd)
        if created:
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise
    return {
        "out": path,
        "out_id": [st.st_dev, st.st_ino],
        # held open until publish or abort: wherever DIR is moved or swapped meanwhile,
        # the staging dir can still be removed through it (parent-side only: not in "write")
        "out_fd": dfd,
        "created": created,
        "staging": staging,
        "staging_id": [sst.st_dev, sst.st_ino],
        "previous": previous,
        "model": model,
        "run": dict(run or {}),
        "write": {
            "staging": os.path.join(path, staging),
            "max_bytes": int(max_bytes),
            "layers": list(layers),
        },
    }


def _previous_dump(dfd: int, shown: str, overwrite: bool) -> list[str]:
    """The files of the previous dump that publishing will replace ([] if empty).

    Raises OutputError unless the directory is empty or (``overwrite``) holds
    only what a previous kerinspect manifest lists, as regular files.
    """
    entries = sorted(os.listdir(dfd))
    if not entries:
        return []
    if not overwrite:
        raise OutputError(
            f"The output directory is not empty ({len(entries)} entries); refusing to touch it."
            + received_out(shown),
            rule="out-not-empty",
            hint=msg("choose a new directory, or pass {overwrite} to replace a previous kerinspect dump"),
        )
    listed = _read_previous_manifest(dfd, shown)
    found: list[str] = []
    for name in entries:
        if name == INPUTS_DIR:
            try:
                ist = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(ist.st_mode) or not stat.S_ISDIR(ist.st_mode):
                refuse_entry(name, ist.st_mode, shown)
            ifd = open_dir(name, [ist.st_dev, ist.st_ino], dir_fd=dfd)
            try:
                inner = sorted(os.listdir(ifd))
                for sub in inner:
                    _check_listed(ifd, sub, f"{INPUTS_DIR}/{sub}", listed, shown)
            finally:
                os.close(ifd)
            found += [f"{INPUTS_DIR}/{sub}" for sub in inner]
            continue
        _check_listed(dfd, name, name, listed, shown)
        found.append(name)
    found.sort(key=lambda rel: rel != MANIFEST)  # the manifest goes first
    return found


def refuse_entry(rel: str, mode: int, shown: str) -> None:
    if stat.S_ISLNK(mode):
        raise OutputError(
            f"{escape_text(rel, 100)!r} in the output directory is a symbolic link; refusing to replace it."
            + received_out(shown),
            rule="out-symlink",
        )
    raise OutputError(
        f"The output directory holds {escape_text(rel, 100)!r}, which is not a regular file of the "
        f"previous kerinspect dump; refusing to overwrite." + received_out(shown),
        rule="out-not-empty",
    )


def _check_listed(dir_fd: int, name: str, rel: str, listed: set[str], shown: str) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        refuse_entry(rel, st.st_mode, shown)
    if rel not in listed:
        hint = None
        if name.startswith(STAGING_PREFIX):
            hint = "it was left by an interrupted kerinspect run; remove it"
        raise OutputError(
            f"The output directory holds {escape_text(rel, 100)!r}, which the previous dump's manifest "
            f"does not list; refusing to overwrite files kerinspect did not write." + received_out(shown),
            rule="out-not-empty",
            hint=hint,
        )


def _read_previous_manifest(dfd: int, shown: str) -> set[str]:
    """Relative paths a previous kerinspect manifest in ``dfd`` lists (itself included)."""
    refuse = OutputError(
        msg(
            "The output directory is not empty and holds no kerinspect dump (no valid {manifest}); "
            "{overwrite} only replaces a previous kerinspect dump.",
            manifest=MANIFEST,
        )
        + received_out(shown),
        rule="out-not-empty",
        hint="choose a new or empty directory",
    )
    try:
        manifest = read_manifest_at(dfd)
    except (OSError, ValueError):
        raise refuse from None
    listed = {MANIFEST}
    for entry in list(manifest.get("tensors", [])) + list(manifest.get("inputs", [])):
        rel = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(rel, str) and is_own_file(rel):
            listed.add(rel)
    return listed
