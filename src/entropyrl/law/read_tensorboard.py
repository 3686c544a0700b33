"""Reader of TensorBoard event files (verl's ``tensorboard`` logger, torch's SummaryWriter, TF).

With the ``tensorboard`` package installed (``pip install 'entropyrl[tensorboard]'``) its
``EventAccumulator`` reads the directory. Without it, a small built-in reader is used: event
files are TFRecord files (each record: ``uint64 length``, ``uint32`` CRC of the length, the
bytes, ``uint32`` CRC of the bytes) of ``Event`` protobuf messages; it decodes the few fields
a scalar needs — ``Event.step`` (field 2), ``Event.summary`` (5) → ``Summary.value`` (1) →
``tag`` (1) and ``simple_value`` (2), or a one-element ``tensor`` (8: ``float_val`` 5,
``double_val`` 6, ``tensor_content`` 4 with ``dtype`` 1). Hand-written because the only
library that parses these files is tensorboard itself (or TensorFlow); CRCs are not checked.

Every scalar tag is read; the step comes from the events (``--step-key`` is not used).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from entropyrl.errors import UserError
from entropyrl.law.logtable import LogTable

DT_FLOAT, DT_DOUBLE = 1, 2  # TensorProto dtypes (tensorflow/core/framework/types.proto)


def read_tensorboard(path: Path) -> LogTable:
    """Read every scalar tag of the event files at ``path`` (a file or a directory)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator  # noqa: F401
    except ImportError:
        return _read_builtin(path)
    return _read_accumulator(path)


def _read_accumulator(path: Path) -> LogTable:
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    try:
        acc.Reload()
    except Exception as err:  # the reader raises several private error types on corrupt files
        raise UserError(
            f"cannot read TensorBoard events at {path}: {err}; is the file "
            "complete (not still being copied)?"
        ) from None
    table = LogTable(path, "tensorboard", step_key="event step")
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        for e in acc.Scalars(tag):
            table.add(tag, float(e.step), float(e.value), f"{path}:{tag}")
    for tag in tags.get("tensors", []):  # TF2-style summaries store a scalar tensor
        for e in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(e.tensor_proto)
            if arr.size == 1 and arr.dtype.kind in "fiu":
                table.add(tag, float(e.step), float(arr.reshape(-1)[0]), f"{path}:{tag}")
    return table


def _read_builtin(path: Path) -> LogTable:
    files = sorted(path.glob("*tfevents*")) if path.is_dir() else [path]
    table = LogTable(path, "tensorboard", step_key="event step")
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read {file}: {err}") from None
        for record in _records(data, file):
            step, values = _event(record)
            for tag, value in values:
                table.add(tag, float(step), value, f"{file}:{tag}")
    return table


def _records(data: bytes, file: Path) -> Iterator[bytes]:
    """The records of a TFRecord file; a torn last record (a live run) ends the file."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            return
        if length > len(data):
            raise UserError(f"{file}: not a TensorBoard events file (bad record length)")
        yield data[start:end]
        pos = end + 4


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Protobuf wire format: ``(field number, wire type, value)``; fixed-size values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, pos


def _event(record: bytes) -> tuple[int, list[tuple[str, float]]]:
    """``(step, [(tag, value)])`` of one Event; non-scalar values are skipped."""
    step, values = 0, []
    try:
        for field, _, value in _fields(record):
            if field == 2 and isinstance(value, int):
                step = value - (1 << 64) if value >= 1 << 63 else value
            elif field == 5 and isinstance(value, bytes):
                for f2, _, v in _fields(value):
                    if f2 == 1 and isinstance(v, bytes):
                        scalar = _summary_value(v)
                        if scalar is not None:
                            values.append(scalar)
    except (ValueError, struct.error):
        return step, []  # not a scalar event we understand (graphs, images, …)
    return step, values


def _summary_value(buf: bytes) -> tuple[str, float] | None:
    tag, value = "", None
    for field, _, v in _fields(buf):
        if field == 1 and isinstance(v, bytes):
            tag = v.decode("utf-8", "replace")
        elif field == 2 and isinstance(v, bytes):
            (value,) = struct.unpack("<f", v)
        elif field == 8 and isinstance(v, bytes):
            value = _tensor_scalar(v)
    return (tag, float(value)) if tag and value is not None else None


def _tensor_scalar(buf: bytes) -> float | None:
    dtype, floats, content = 0, [], b""
    for field, wire, v in _fields(buf):
        if field == 1 and isinstance(v, int):
            dtype = v
        elif field == 4 and isinstance(v, bytes):
            content = v
        elif field in (5, 6) and isinstance(v, bytes):
            fmt, size = ("<f", 4) if field == 5 else ("<d", 8)
            if wire == 2:  # packed
                floats += [struct.unpack_from(fmt, v, i)[0] for i in range(0, len(v), size)]
            else:
                floats.append(struct.unpack(fmt, v)[0])
    if len(floats) == 1:
        return float(floats[0])
    if dtype == DT_FLOAT and len(content) == 4:
        return float(struct.unpack("<f", content)[0])
    if dtype == DT_DOUBLE and len(content) == 8:
        return float(struct.unpack("<d", content)[0])
    return None
