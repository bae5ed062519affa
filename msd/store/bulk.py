"""Bulk reads straight into numpy arrays: `COPY (query) TO STDOUT (FORMAT binary)` parsed as
fixed-width records.

A million training rows as Python tuples and dicts cost a minute and gigabytes; as binary COPY
records they are a few numpy operations. Every selected column must be NOT NULL and of a fixed
width (int8, float8, bool, a fixed-length text), so that each record has the same size; the
parser checks every length word and refuses anything else instead of misreading it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_SIGNATURE) + 8           # signature, flags (int32), header extension length (int32)
_TRAILER = b"\xff\xff"
# PostgreSQL's binary wire types by the numpy type we want back.
WIRE = {"int8": ">i8", "float8": ">f8", "bool": "u1"}

# float8 input refuses magnitudes beyond these instead of rounding to 0 or infinity (the same
# bounds as sql/009_training_columns.sql).
_SAFE_MAGNITUDE = "1e-300 AND 1e300"


def float8_or_nan(numeric: str) -> str:
    """float8 of an SQL numeric expression (NaN when NULL or beyond float8's safe range)."""
    return (f"CASE WHEN {numeric} = 0 OR abs({numeric}) BETWEEN {_SAFE_MAGNITUDE} "
            f"THEN ({numeric})::float8 ELSE 'NaN'::float8 END")


def record_dtype(columns: Sequence[tuple[str, str]]) -> np.dtype:
    """The packed dtype of one binary COPY record of `columns` ((name, numpy type) pairs; a
    numpy type is a key of WIRE or "S<n>" for text of exactly n bytes)."""
    fields: list[tuple[str, str]] = [("_count", ">i2")]
    for name, kind in columns:
        fields += [(f"_len_{name}", ">i4"), (name, WIRE.get(kind, kind))]
    return np.dtype(fields)


class BinaryCopyReader:
    """A file-like sink for `copy_expert(... TO STDOUT (FORMAT binary))` that parses complete
    records into numpy blocks as data arrives, so the raw bytes never pile up."""

    def __init__(self, columns: Sequence[tuple[str, str]], block_bytes: int = 4 << 20,
                 progress: Callable[[], None] = lambda: None) -> None:
        self.progress = progress
        self.columns = tuple(columns)
        self.dtype = record_dtype(self.columns)
        self.block_bytes = max(block_bytes, self.dtype.itemsize)
        self._pending = bytearray()
        self._header_seen = False
        self._ended = False
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in self.columns}

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= self.block_bytes:
            self._parse(final=False)
        return len(data)

    def result(self) -> dict[str, np.ndarray]:
        """Every column as a native-endian array (bool columns as bool)."""
        self._parse(final=True)
        if not self._ended:
            raise ValueError("binary COPY: no end-of-data marker; the stream was cut short")
        out = {}
        for name, _ in self.columns:
            parts = self._parts.pop(name)
            out[name] = np.concatenate(parts) if parts else self._native(
                np.empty(0, dtype=self.dtype)[name], name)
            parts.clear()
        return out

    def _native(self, column: np.ndarray, name: str) -> np.ndarray:
        kind = dict(self.columns)[name]
        return column.astype(bool) if kind == "bool" else column.astype(
            column.dtype.newbyteorder("="))

    def _parse(self, *, final: bool) -> None:
        buffer = self._pending
        start = 0
        if not self._header_seen:
            if len(buffer) < _HEADER:
                return self._refuse_if(final, "header cut short")
            if bytes(buffer[:len(_SIGNATURE)]) != _SIGNATURE:
                raise ValueError("binary COPY: bad signature")
            extension = int.from_bytes(buffer[_HEADER - 4:_HEADER], "big")
            start = _HEADER + extension
            self._header_seen = True
        size = self.dtype.itemsize
        whole = (len(buffer) - start) // size
        if final and bytes(buffer[len(buffer) - 2:]) == _TRAILER \
                and (len(buffer) - start - 2) % size == 0:
            whole = (len(buffer) - start - 2) // size
            self._ended = True
        if whole:
            block = np.frombuffer(bytes(buffer[start:start + whole * size]), dtype=self.dtype)
            self._check(block)
            # columns at once: records keep every length word and would double the memory
            for name, _ in self.columns:
                self._parts[name].append(self._native(block[name], name))
            self.progress()
        del buffer[:start + whole * size + (2 if self._ended else 0)]
        if final and buffer:
            raise ValueError(f"binary COPY: {len(buffer)} bytes left that are no whole record")

    def _check(self, block: np.ndarray) -> None:
        if (block["_count"] != len(self.columns)).any():
            raise ValueError(f"binary COPY: a record without {len(self.columns)} columns")
        for name, _ in self.columns:
            width = self.dtype.fields[name][0].itemsize
            if (block[f"_len_{name}"] != width).any():
                raise ValueError(f"binary COPY: column {name} is NULL or not {width} bytes wide")

    @staticmethod
    def _refuse_if(final: bool, what: str) -> None:
        if final:
            raise ValueError(f"binary COPY: {what}")


# A bulk read is one statement that may run for minutes on a big history: it gets this timeout
# instead of the session's (seconds), and reports progress per block of records instead.
BULK_STATEMENT_TIMEOUT_MS = 600_000


def copy_records(conn, query: str, params: dict, columns: Sequence[tuple[str, str]],
                 progress: Callable[[], None] = lambda: None) -> dict[str, np.ndarray]:
    """Run `query` (its select list must match `columns`) and return its columns as arrays.

    Inside the caller's transaction: the statement timeout and JIT setting last until it ends
    (JIT compiles for seconds and gains nothing on a streaming read)."""
    reader = BinaryCopyReader(columns, progress=progress)
    with conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = %s; SET LOCAL jit = off",
                    (BULK_STATEMENT_TIMEOUT_MS,))
        sql = cur.mogrify(query, params).decode()
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT binary)", reader)
    return reader.result()
