"""Images as model input: a folder (subfolders are labels), one image, or a glob.

Listed like ``keras.utils.image_dataset_from_directory`` (``labels="inferred"``): a
folder with subfolders has one label per subfolder (names sorted; hidden ones
skipped), its images found recursively and sorted by path within each; a folder
without subfolders is unlabelled. A folder holding images at its top level *and*
subfolders is refused (Keras would silently leave those images out). Files are
PNG, JPEG, BMP and GIF (first frame) by extension, case-insensitive; other files are
skipped, and an entry with an image's extension that is not a regular file (a FIFO,
a device, a broken link) is refused (opening it could hang the worker).

Each image is decoded by TensorFlow (``tf.io.decode_image``, one file at a time, so a
corrupt one is named) to the model input's channels (the last axis: 1, 3 or 4; a
rank-3 input ``(batch, height, width)`` takes grayscale), resized (bilinear, as
Keras does) to the input's height × width, as float32 pixels in [0, 255], then scaled
by ``preprocess`` (the ``keras.applications`` modes, see :func:`preprocess`). Where
the model's height and width are dynamic, every image is resized to the first
image's size (in sorted order), so batches stack; the input's note says so.

Before any decoding, the header's width × height (PNG IHDR, GIF logical screen, BMP
info header, ``tf.io.extract_jpeg_shape``) is refused above
:data:`~kerinspect.spec.MAX_INPUT_ELEMENTS` pixels (a decompression bomb), and a file
above :data:`MAX_IMAGE_BYTES` is not read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kerinspect.engine.inputs import Feed, InputSpec
from kerinspect.engine.streams import (
    Batch,
    describe_inputs,
    in_batches,
    shown,
    streamed,
    take,
)
from kerinspect.errors import DataError, Message, UsageError, escape_text, msg
from kerinspect.report import InputRecord
from kerinspect.spec import INPUT_FILE_KINDS, MAX_INPUT_ELEMENTS, RunSpec

IMAGE_EXTENSIONS = INPUT_FILE_KINDS["images"]

#: Largest image file read, in bytes.
MAX_IMAGE_BYTES = 256 << 20
#: Most files a folder or glob may list.
MAX_FILES = 10_000_000

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
#: What each ``preprocess`` mode feeds, for notes and warnings.
FED_RANGE = {
    "none": "[0, 255]",
    "unit": "[0, 1]",
    "tf": "[-1, 1]",
    "caffe": "BGR pixels less the ImageNet means (about [-124, 152])",
    "torch": "ImageNet-normalised values (about [-2.1, 2.6])",
}


# -- listing ------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str, seen: set[tuple[int, int]]) -> Iterator[str]:
    """Image files under ``folder``, recursively, sorted by path; links to folders are
    followed once (a loop is not)."""
    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_dir():
            yield from _walk(e.path, seen)
        elif _is_image(e.name):
            _check_entry(e)
            yield e.path


def _check_entry(e: os.DirEntry[str]) -> None:
    if not e.is_file():
        raise DataError(
            msg(
                "{p} is not a regular file (a FIFO, device, socket or broken link) (read for {input}).",
                p=shown(e.path),
            ),
            rule="input-unreadable",
        )


def list_folder(root: str) -> tuple[list[str], list[int] | None, tuple[str, ...] | None]:
    """``(files, label of each, class names)`` of a folder (see the module docstring)."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise DataError(
            msg("Cannot list {p}: {why} (read for {input}).", p=shown(root), why=err.strerror)
        ) from None
    classes = [e for e in entries if not e.name.startswith(".") and e.is_dir()]
    top = [e for e in entries if not e.name.startswith(".") and not e.is_dir() and _is_image(e.name)]
    if not classes:
        for entry in top:
            _check_entry(entry)
        return [entry.path for entry in top], None, None
    if top:
        raise DataError(
            msg(
                "{p} holds images at its top level ({first}) and label subfolders ({classes}): "
                "Keras would leave the top-level images out (read for {input}).",
                p=shown(root),
                first=escape_text(top[0].name, 80) + (f" and {len(top) - 1} more" if len(top) > 1 else ""),
                classes=escape_text(", ".join(e.name for e in classes[:5]), 200)
                + (", ..." if len(classes) > 5 else ""),
            ),
            hint="move them into a label folder, or give a glob of the images to feed",
        )
    files: list[str] = []
    labels: list[int] = []
    seen: set[tuple[int, int]] = set()
    for index, folder in enumerate(classes):
        for f in _walk(folder.path, seen):
            files.append(f)
            labels.append(index)
            if len(files) > MAX_FILES:
                raise DataError(
                    msg("{p} holds more than {n:,} images (read for {input}).", p=shown(root), n=MAX_FILES)
                )
    return files, labels, tuple(e.name for e in classes)


# -- the model's image input ------------------------------------------------------------


def image_spec(
    specs: Sequence[InputSpec], source: str
) -> tuple[InputSpec, int | None, int | None, int, bool]:
    """``(spec, height, width, channels, squeeze)`` of the model's one image input."""
    spec = specs[0]
    shape = spec.shape[1:]
    ok = len(specs) == 1 and spec.kind == "float" and len(shape) in (2, 3)
    if ok and len(shape) == 3:
        ok = shape[2] in (1, 3, 4, None)
    if not ok:
        raise DataError(
            msg(
                "Images feed a model with one float input of shape (batch, height, width, channels) or "
                "(batch, height, width); this model takes {inputs}. Received: {input}={p}",
                inputs=describe_inputs(specs),
                p=shown(source),
            )
        )
    channels = 1 if len(shape) == 2 else (shape[2] or 3)
    return spec, shape[0], shape[1], channels, len(shape) == 2


# -- bytes to pixels ------------------------------------------------------------------------


def read_image(path: str) -> bytes:
    from kerinspect.safefs import ReadRefused, read_regular

    try:
        return read_regular(path, MAX_IMAGE_BYTES)
    except ReadRefused as e:
        raise DataError(
            msg("Cannot read image {p}: {reason} (read for {input}).", p=shown(path), reason=e.reason),
            rule="input-unreadable",
        ) from None


def header_size(data: bytes, path: str) -> tuple[str, int, int]:
    """``(format, width, height)`` from the header alone, before anything is decoded;
    refused above :data:`~kerinspect.spec.MAX_INPUT_ELEMENTS` pixels."""
    fmt, width, height = "?", 0, 0
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            fmt = "PNG"
            width, height = struct.unpack(">II", data[16:24])
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            fmt = "GIF"
            width, height = struct.unpack("<HH", data[6:10])
        elif data[:2] == b"BM":
            fmt = "BMP"
            (dib,) = struct.unpack("<I", data[14:18])
            if dib == 12:
                width, height = struct.unpack("<hh", data[18:22])
            else:
                width, height = struct.unpack("<ii", data[18:26])
            width, height = abs(width), abs(height)
        elif data[:3] == b"\xff\xd8\xff":
            fmt = "JPEG"
            import tensorflow as tf

            h, w, _ = (int(v) for v in tf.io.extract_jpeg_shape(data).numpy())
            width, height = w, h
        else:
            raise DataError(
                msg(
                    "{p} is not a PNG, JPEG, BMP or GIF image (its first bytes are {head}) (read for {input}).",
                    p=shown(path),
                    head=escape_text(repr(data[:8]), 60),
                )
            )
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - struct or TensorFlow on a truncated/corrupt header
        raise DataError(
            msg(
                "Corrupt {fmt} image {p}: its header cannot be read (read for {input}).",
                fmt=fmt,
                p=shown(path),
            )
        ) from None
    if width < 1 or height < 1 or width * height > MAX_INPUT_ELEMENTS:
        raise DataError(
            msg(
                "Image {p} declares {w}×{h} pixels, outside 1 to {limit:,}: refused before decoding (read for {input}).",
                p=shown(path),
                w=width,
                h=height,
                limit=MAX_INPUT_ELEMENTS,
            ),
            rule="input-too-large",
        )
    return fmt, width, height


def decode(path: str, channels: int, size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    """One image file as float32 pixels in [0, 255], shape (height, width, channels),
    resized (bilinear) to ``size`` when given; and its format."""
    import tensorflow as tf

    data = read_image(path)
    fmt = header_size(data, path)[0]
    try:
        with tf.device("/CPU:0"):
            img = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
            if size is not None:
                img = tf.image.resize(img, size, method="bilinear")
            return np.asarray(tf.cast(img, tf.float32)), fmt
    except (tf.errors.OpError, ValueError) as e:
        why = escape_text(str(getattr(e, "message", e)).split("\n")[0], 200)
        raise DataError(
            msg("Corrupt {fmt} image {p}: {why} (read for {input}).", fmt=fmt, p=shown(path), why=why)
        ) from None


def preprocess(x: np.ndarray, mode: str) -> np.ndarray:
    """``keras.applications.imagenet_utils.preprocess_input``'s modes on float32
    pixels in [0, 255] (channels last): ``none``; ``unit`` /255; ``tf`` /127.5 - 1;
    ``caffe`` RGB→BGR, ImageNet means subtracted; ``torch`` /255, ImageNet mean and
    std normalised."""
    if mode == "unit":
        return x / np.float32(255)
    if mode == "tf":
        return x / np.float32(127.5) - np.float32(1)
    if mode == "caffe":
        return x[..., ::-1] - np.asarray(IMAGENET_MEAN_BGR, np.float32)
    if mode == "torch":
        return (x / np.float32(255) - np.asarray(TORCH_MEAN, np.float32)) / np.asarray(TORCH_STD, np.float32)
    return x


def unpreprocess(x: np.ndarray, mode: str) -> np.ndarray:
    """The inverse of :func:`preprocess`: fed values back to pixels in [0, 255] (RGB)."""
    if mode == "unit":
        return x * 255.0
    if mode == "tf":
        return (x + 1.0) * 127.5
    if mode == "caffe":
        return (x + np.asarray(IMAGENET_MEAN_BGR))[..., ::-1]
    if mode == "torch":
        return (x * np.asarray(TORCH_STD) + np.asarray(TORCH_MEAN)) * 255.0
    return x


# -- the feed -------------------------------------------------------------------------------


def image_feed(
    model: Any, folder: str | None, files: list[str], specs: Sequence[InputSpec], run: RunSpec, source: str
) -> Feed:
    """Images (a folder's, a glob's or one file) for the model's one image input."""
    spec, height, width, channels, squeeze = image_spec(specs, source)
    if run.preprocess in ("caffe", "torch") and channels != 3:
        raise UsageError(
            msg(
                "{preprocess} {mode} works on RGB images; input {name!r} takes {c} channel(s). "
                "Received: {preprocess}={mode}",
                mode=run.preprocess,
                name=escape_text(spec.name, 60),
                c=channels,
            )
        )
    labels: list[int] | None = None
    classes: tuple[str, ...] | None = None
    if folder is not None:
        files, labels, classes = list_folder(folder)
    else:
        for f in files:
            from kerinspect.safefs import ReadRefused, check_regular

            try:
                check_regular(f)
            except ReadRefused as e:
                raise DataError(
                    msg("Cannot read image {p}: {reason} (read for {input}).", p=shown(f), reason=e.reason)
                ) from None
    total = take(len(files), run, source, "images")
    files = files[:total]
    size = None if height is None or width is None else (height, width)
    size_note = "" if size is None else f"{height}×{width}"
    if size is None:  # dynamic height/width: every image takes the first one's size
        first, _ = decode(files[0], channels, None)
        fixed = first.shape[:2]
        size = (height or int(fixed[0]), width or int(fixed[1]))
        size_note = f"{size[0]}×{size[1]} (the first image's size; the model's is dynamic)"
    per_sample = (*size, channels) if not squeeze else size

    def batches() -> Iterator[Batch]:
        idx = iter(range(total))
        for chunk in in_batches(idx, total, run.batch_size):
            pixels = np.stack([decode(files[i], channels, size)[0] for i in chunk])
            x = preprocess(pixels, run.preprocess)
            if squeeze:
                x = x[..., 0]
            y = None if labels is None else np.asarray([labels[i] for i in chunk], np.int64)
            yield [np.ascontiguousarray(x, dtype=np.float32)], y

    exts = sorted({os.path.splitext(f)[1].lower().lstrip(".").upper().replace("JPG", "JPEG") for f in files})
    kinds = "/".join(exts)
    where = (
        (
            f" in {len(classes)} label folders"
            if classes
            else f" in {os.path.basename(os.path.normpath(source)) or source}"
        )
        if folder is not None
        else ""
    )
    color = {1: "grayscale", 3: "RGB", 4: "RGBA"}[channels]
    note = (
        f"images: {total:,} {kinds} file{'s' * (total != 1)}{where}, resized to {size_note}, {color}, "
        + ("pixels 0-255" if run.preprocess == "none" else f"pixels scaled to {FED_RANGE[run.preprocess]}")
        + f" (preprocess={run.preprocess})"
    )
    record = InputRecord(spec.name, (total, *per_sample), "float32", source, None, note)
    warning = expectation_warning(model, spec, run.preprocess)
    return streamed(
        (record,), total, run, batches, labels=classes, warnings=() if warning is None else (warning,)
    )


# -- what the model's first layers expect ----------------------------------------------------


def _first_consumers(model: Any, name: str) -> list[Any]:
    """The layers that read the input ``name`` directly (entering nested models)."""
    from kerinspect.engine import keras_adapter as ka
    from kerinspect.engine.inputs import consumer_layers

    graph = ka.graph_of(model)
    tensor = None if graph is None else next((x for x in graph.inputs if x.name == name), None)
    return [] if tensor is None else list(consumer_layers(graph, tensor))


def _ratio(scale: float) -> str:
    inv = 1 / scale
    return f"1/{round(inv):g}" if abs(inv - round(inv)) < 1e-3 * abs(inv) else f"{scale:.4g}"


def expectation_warning(model: Any, spec: InputSpec, mode: str) -> Message | None:
    """One line when the layers right after the image input expect another pixel range
    than ``mode`` feeds: a ``Rescaling`` by 1/255 (or 1/127.5) expects [0, 255]; a
    ``Normalization`` whose mean is above 2 expects [0, 255], one in [0, 1] expects
    [0, 1]. None when they agree or say nothing."""
    for op in _first_consumers(model, spec.name):
        cls = type(op).__name__
        if cls == "Rescaling":
            try:
                scale = float(np.mean(np.asarray(op.scale, dtype=np.float64)))
            except (TypeError, ValueError):
                continue
            if 0 < abs(scale) <= 1 / 64 and mode != "none":
                said = f"the model rescales by {_ratio(scale)} (expects pixels in [0, 255])"
                return _warning(spec, said, mode)
        elif cls == "Normalization":
            try:
                mean = float(np.mean(np.asarray(op.mean, dtype=np.float64)))
            except (TypeError, ValueError, AttributeError):
                continue
            if mean > 2 and mode in ("unit", "tf", "torch"):
                return _warning(
                    spec, f"the model normalises with mean {mean:.4g} (expects pixels in [0, 255])", mode
                )
            if 0 <= mean <= 1 and mode == "none":
                return _warning(
                    spec, f"the model normalises with mean {mean:.4g} (expects pixels in [0, 1])", mode
                )
    return None


def _warning(spec: InputSpec, said: str, mode: str) -> Message:
    return msg(
        "input {name!r}: {said} but {preprocess} {mode} feeds {fed}",
        name=escape_text(spec.name, 60),
        said=said,
        mode=mode,
        fed=FED_RANGE[mode],
    )
