"""Phase 3 of a dump, in the parent (no TensorFlow, no numpy): publish or abort.

The staged files and the draft come from the process that ran untrusted model
code: check each file (a regular single-link file, kerinspect's own name, an
``.npy`` header that matches the draft, the exact size), move them to their
final names without overwriting anything that is not the previous dump's,
``fsync``, and write ``manifest.json`` last. :func:`abort_dump` undoes a run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kerinspect import __version__
from kerinspect.dump.layout import (
    DUMP_FORMAT,
    DUMP_SCHEMA_VERSION,
    INPUT_KINDS,
    INPUTS_DIR,
    MANIFEST,
    PREVIOUS,
    STORED_KINDS,
    is_own_file,
    received_out,
    show_path,
)
from kerinspect.dump.plan import refuse_entry
from kerinspect.errors import OutputError, escape_text, msg
from kerinspect.safefs import O_NEW, O_READ, move_noreplace, open_dir, os_reason, rmtree_at, split_rel, subdir
from kerinspect.scan.npy import NpyDtype, npy_dtype, read_npy_header
from kerinspect.units import format_bytes

__all__ = ["abort_dump", "publish_dump"]


@dataclass
class _Staged:
    rel: str  # final path relative to DIR (== path relative to the staging dir)
    entry: dict[str, Any]
    kinds: str
    dtype: NpyDtype  # the draft's, checked


@dataclass
class _Publish:
    dfd: int
    sfd: int
    moved: list[str] = field(default_factory=list)
    stashed: list[str] = field(default_factory=list)
    made_inputs: bool = False


def _bad(what: str) -> OutputError:
    return OutputError(f"The staged dump is invalid: {what}; nothing was published.", rule="staging-invalid")


def _check_draft(draft: Mapping[str, Any]) -> list[_Staged]:
    """The staged files a draft promises, after checking its plain data.

    The draft comes from the process that ran untrusted model code: every field
    that reaches the manifest or a path is checked here.
    """
    if not isinstance(draft, Mapping):
        raise _bad("the draft is not an object")
    out: list[_Staged] = []
    seen: set[str] = set()
    for group, kinds in (("tensors", STORED_KINDS), ("inputs", INPUT_KINDS)):
        entries = draft.get(group)
        if not isinstance(entries, list):
            raise _bad(f"{group} is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise _bad(f"an entry of {group} is not an object")
            rel = entry.get("file")
            if (
                not isinstance(rel, str)
                or not is_own_file(rel)
                or ((group == "inputs") != rel.startswith(INPUTS_DIR + "/"))
            ):
                raise _bad(f"bad file name {escape_text(str(rel), 100)!r}")
            folded = unicodedata.normalize("NFC", rel).casefold()
            if folded in seen:
                raise _bad(f"file name {rel!r} appears twice")
            seen.add(folded)
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or not shape:
                raise _bad(f"bad shape for {rel!r}")
            try:
                dtype = npy_dtype(
                    str(entry.get("dtype"))
                )  # plain names without numpy, else as np.dtype reads it
            except ValueError:
                raise _bad(f"bad dtype for {rel!r}") from None
            if dtype.kind not in kinds or dtype.hasobject:
                raise _bad(f"dtype {dtype} of {rel!r} is not allowed")
            want = "key" if group == "tensors" else "name"
            if not isinstance(entry.get(want), str):
                raise _bad(f"{rel!r} has no {want}")
            for key, value in entry.items():
                if key == "stats":
                    _check_stats(value, rel)
                elif key not in ("shape",) and not (value is None or type(value) in (str, int)):
                    raise _bad(f"field {escape_text(str(key), 50)!r} of {rel!r} is not plain data")
            out.append(_Staged(rel, entry, kinds, dtype))
    for key in ("samples", "batch_size"):
        if type(draft.get(key)) is not int:
            raise _bad(f"{key} is not an integer")
    return out


def _check_stats(value: Any, rel: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _bad(f"stats of {rel!r} are not an object")
    for v in value.values():
        if not (v is None or (type(v) in (int, float) and math.isfinite(v))):
            raise _bad(f"stats of {rel!r} hold a non-finite or non-numeric value")


def _verify_staged(sfd: int, item: _Staged) -> None:
    """Open a staged file (no symlink, one link), check its header against the
    draft, check its size, hash it and fsync it."""
    head, name = split_rel(item.rel)
    parent = open_dir(head, dir_fd=sfd) if head else sfd
    try:
        fd = os.open(name, O_READ, dir_fd=parent)
    except OSError as e:
        raise _bad(f"{item.rel!r} cannot be opened ({os_reason(e)})") from None
    finally:
        if head:
            os.close(parent)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise _bad(f"{item.rel!r} is not a regular file with one link")
        try:
            shape, fortran, dtype = read_npy_header(f)
        except ValueError as e:
            raise _bad(f"{item.rel!r} has no valid .npy header ({e})") from None
        want_shape, want_dtype = tuple(item.entry["shape"]), item.dtype
        if fortran or tuple(shape) != want_shape or dtype.key != want_dtype.key or dtype.hasobject:
            raise _bad(f"{item.rel!r} holds {dtype} {tuple(shape)}, not {want_dtype} {want_shape}")
        size = f.tell() + math.prod(shape) * dtype.itemsize
        if st.st_size != size:
            raise _bad(f"{item.rel!r} is {st.st_size} bytes, not {size}")
        f.seek(0)
        h = hashlib.file_digest(f, "sha256")
        os.fsync(fd)
    item.entry["sha256"] = h.hexdigest()
    item.entry["bytes"] = size


def publish_dump(plan: Mapping[str, Any], draft: Mapping[str, Any]) -> dict[str, Any]:
    """Check the staged files, move them into ``DIR``, write ``manifest.json`` last.

    Never imports TensorFlow. Treats the draft and the staged files as untrusted:
    names must be kerinspect's own pattern, each file a regular single-link file
    whose ``.npy`` header matches the draft (``allow_pickle`` never needed) and
    whose size is exact. Files move with ``link`` + ``unlink`` (never replacing
    anything); with ``overwrite`` the previous dump's files are first moved
    aside into the staging dir and put back if publishing fails. On any failure
    everything this call moved is removed, the staging dir too
    (:func:`abort_dump`), and an :class:`OutputError` is raised.

    Args:
        plan: from :func:`prepare_dump`.
        draft: from :func:`write_dump`.

    Returns:
        The manifest, as written.
    """
    shown = show_path(plan["out"])
    try:
        manifest = _publish(plan, draft, shown)
    except OSError as e:
        abort_dump(plan)
        raise OutputError(
            f"Cannot publish the dump: {os_reason(e)}; nothing was published." + received_out(shown),
            rule="publish-failed",
        ) from None
    except BaseException:
        abort_dump(plan)
        raise
    held = release_dir(plan)
    if held is not None:
        os.close(held)
    return manifest


def release_dir(plan: Mapping[str, Any]) -> int | None:
    """The descriptor on ``DIR`` that :func:`~kerinspect.dump.plan.prepare_dump` holds,
    taken out of the plan (the caller closes it); None if already released."""
    if isinstance(plan, dict):
        fd = plan.pop("out_fd", None)
        return fd if isinstance(fd, int) else None
    return None


def _publish(plan: Mapping[str, Any], draft: Mapping[str, Any], shown: str) -> dict[str, Any]:
    items = _check_draft(draft)
    dfd = open_dir(plan["out"], plan["out_id"])
    try:
        sfd = open_dir(plan["staging"], plan["staging_id"], dir_fd=dfd)
    except BaseException:
        os.close(dfd)
        raise
    state = _Publish(dfd, sfd)
    try:
        for item in items:
            _verify_staged(sfd, item)
        # --max-bytes is enforced here too: the writer ran model code
        total = sum(os.stat(item.rel, dir_fd=sfd, follow_symlinks=False).st_size for item in items)
        limit = int(plan["write"]["max_bytes"])
        if total > limit:
            raise OutputError(
                msg(
                    "The dump would be {total}, above {max_bytes} {limit}; nothing was published.",
                    total=format_bytes(total),
                    limit=format_bytes(limit),
                )
                + received_out(shown),
                rule="too-large",
            )
        real_out = os.path.realpath(plan["out"])
        for item in items:
            target = os.path.realpath(os.path.join(real_out, item.rel))
            if os.path.commonpath([real_out, target]) != real_out:  # belt and braces: names are checked
                raise OutputError(
                    f"{item.rel!r} would resolve outside the output directory (a symbolic link appeared "
                    f"there during the run?); nothing was published." + received_out(shown),
                    rule="out-escape",
                )
        manifest = _manifest(plan, draft, items)
        text = _manifest_text(manifest)
        try:
            _swap_in(plan, items, text, state)
        except BaseException:
            _roll_back(state)
            raise
    finally:
        os.close(sfd)
        os.close(dfd)
    # the staging dir (and the previous dump in it) goes; the held descriptor stays the caller's
    abort_dump({**{k: v for k, v in plan.items() if k != "out_fd"}, "created": False})
    return manifest


def _manifest_text(manifest: Mapping[str, Any]) -> str:
    """Indented JSON, ASCII only, with lists of integers (shapes) on one line.

    Raw newlines occur only between JSON tokens (strings escape theirs), so the
    substitution cannot touch a string's content.
    """
    text = json.dumps(manifest, indent=1, ensure_ascii=True, allow_nan=False)
    text = re.sub(
        r"\[\n\s*(-?[0-9]+(?:,\n\s*-?[0-9]+)*)\n\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )
    return text + "\n"


def _swap_in(plan: Mapping[str, Any], items: list[_Staged], text: str, st: _Publish) -> None:
    dfd, sfd = st.dfd, st.sfd
    shown = show_path(plan["out"])
    previous = [rel for rel in plan.get("previous", []) if isinstance(rel, str)]
    if previous:  # move the previous dump aside (manifest first): it comes back on failure
        pfd, _ = subdir(sfd, PREVIOUS, create=True)
        try:
            pifd, _ = subdir(pfd, INPUTS_DIR, create=True)
            try:
                for rel in previous:
                    if rel != MANIFEST and not is_own_file(rel):
                        continue
                    head, name = split_rel(rel)
                    src_fd = open_dir(head, dir_fd=dfd) if head else dfd
                    try:
                        try:
                            fst = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if not stat.S_ISREG(fst.st_mode):
                            refuse_entry(rel, fst.st_mode, shown)
                        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=pifd if head else pfd)
                        st.stashed.append(rel)
                    finally:
                        if head:
                            os.close(src_fd)
            finally:
                os.close(pifd)
        finally:
            os.close(pfd)
    ifd = sifd = None
    try:
        if any(item.rel.startswith(INPUTS_DIR + "/") for item in items):
            ifd, st.made_inputs = subdir(dfd, INPUTS_DIR, create=True)
            sifd = open_dir(INPUTS_DIR, dir_fd=sfd)
        for item in items:
            head, name = split_rel(item.rel)
            if head:
                assert ifd is not None and sifd is not None
                move_noreplace(sifd, name, ifd, name)
            else:
                move_noreplace(sfd, name, dfd, name)
            st.moved.append(item.rel)
        if ifd is not None:
            os.fsync(ifd)
        os.fsync(dfd)
        fd = os.open(MANIFEST, O_NEW, 0o644, dir_fd=sfd)
        with open(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(MANIFEST, MANIFEST, src_dir_fd=sfd, dst_dir_fd=dfd)
        st.moved.append(MANIFEST)
        os.fsync(dfd)
    finally:
        for fd_ in (ifd, sifd):
            if fd_ is not None:
                os.close(fd_)


def _roll_back(st: _Publish) -> None:
    """Undo :func:`_swap_in`: remove what it moved in, put the previous dump back."""
    for rel in reversed(st.moved):
        head, name = split_rel(rel)
        try:
            if head:
                fd = open_dir(head, dir_fd=st.dfd)
                try:
                    os.unlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
            else:
                os.unlink(name, dir_fd=st.dfd)
        except OSError:
            pass
    for rel in st.stashed:
        head, name = split_rel(rel)
        try:
            pfd = open_dir(f"{PREVIOUS}/{head}" if head else PREVIOUS, dir_fd=st.sfd)
            dst = open_dir(head, dir_fd=st.dfd) if head else st.dfd
            try:
                move_noreplace(pfd, name, dst, name)
            finally:
                os.close(pfd)
                if head:
                    os.close(dst)
        except OSError:
            pass
    if st.made_inputs:
        try:
            os.rmdir(INPUTS_DIR, dir_fd=st.dfd)
        except OSError:
            pass
    try:
        os.fsync(st.dfd)
    except OSError:
        pass


def _manifest(plan: Mapping[str, Any], draft: Mapping[str, Any], items: list[_Staged]) -> dict[str, Any]:
    def text(v: Any) -> str | None:
        return v if isinstance(v, str) else None

    def lines(v: Any) -> list[str]:  # the worker's warnings and notes: a few lines of text
        return [w[:2000] for w in v[:100] if isinstance(w, str)] if isinstance(v, list) else []

    model = dict(plan.get("model") or {})
    dm = draft.get("model")
    dm = dm if isinstance(dm, dict) else {}
    model["name"] = text(dm.get("name"))
    model["class_name"] = text(dm.get("class_name"))
    tensors = [i.entry for i in items if not i.rel.startswith(INPUTS_DIR + "/")]
    inputs = [i.entry for i in items if i.rel.startswith(INPUTS_DIR + "/")]
    skipped = []
    for entry in draft.get("skipped") or []:
        if isinstance(entry, dict):
            skipped.append({str(k): v for k, v in entry.items() if v is None or type(v) in (str, int)})
    return {
        "format": DUMP_FORMAT,
        "schema_version": DUMP_SCHEMA_VERSION,
        "kerinspect_version": __version__,
        "keras_version": text(draft.get("keras_version")),
        "model": model,
        "run": plan.get("run") or {},
        "samples": draft["samples"],
        "batch_size": draft["batch_size"],
        "inputs": inputs,
        "tensors": tensors,
        "skipped": skipped,
        "warnings": lines(draft.get("warnings")),
        "engine": text(draft.get("engine")),
        "notes": lines(draft.get("notes")),
        "total_bytes": sum(int(i.entry["bytes"]) for i in items),
    }


def abort_dump(plan: Mapping[str, Any]) -> None:
    """Undo :func:`prepare_dump`: remove the staging dir and everything in it, and
    ``DIR`` itself if this run created it and it is empty. Never raises.

    The staging dir is removed through the descriptor ``prepare_dump`` held on ``DIR``,
    so it goes even when ``DIR`` (or a parent) was renamed or swapped for a symlink
    since: nothing is left behind wherever it ended up."""
    held = release_dir(plan)
    if held is not None:
        try:
            rmtree_at(held, plan["staging"])
        except OSError:
            pass
        finally:
            os.close(held)
    try:
        dfd = open_dir(plan["out"], plan["out_id"])
    except (OSError, KeyError):
        return
    try:
        try:
            rmtree_at(dfd, plan["staging"])
        except OSError:
            pass
        if plan.get("created") and not os.listdir(dfd):
            os.rmdir(plan["out"])
    except OSError:
        pass
    finally:
        os.close(dfd)
