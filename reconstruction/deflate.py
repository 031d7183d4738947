"""Deflated Explicit VR Little Endian datasets (PS3.5 A.5), inflated as they are read, within limits.

In this transfer syntax everything after the File Meta is one raw deflate stream. pydicom inflates it whole, in
memory, before it parses a byte (even with ``stop_before_pixels``), so a 4 MB file can take gigabytes. Here
the stream is inflated a chunk at a time while pydicom reads: the values it skips are inflated and dropped,
never kept, and the stream is refused with `DecompressionBombError` (naming the file) as soon as it has
inflated more than the caller's limit, or more than ``MAX_RATIO`` times its compressed size past
``RATIO_FLOOR``. Deflate itself cannot expand more than about 1032 times, so a bomb is caught after at most
a few hundred kilobytes of input beyond the floor.

What pydicom keeps of a header costs far more than its bytes (a functional-group item of 48 bytes becomes
2.7 KB of Python objects), so while a header is read the bytes handed out are held to a stricter ratio,
``HEADER_RATIO`` past ``HEADER_FLOOR``: real per-frame functional groups deflate about 16 times.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from .errors import DecompressionBombError, InputError

DEFAULT_MAX_INFLATED_BYTES = 1 << 30
"""The default limit of one file's inflated dataset (1 GiB); callers pass their own (an upload limit)."""

MAX_RATIO = 100.0
"""Inflated bytes per compressed byte past RATIO_FLOOR: real images deflate 2 to 10 times."""

RATIO_FLOOR = 64 << 20

HEADER_RATIO = 20.0
"""Header bytes read (not skipped) per compressed byte past HEADER_FLOOR."""

HEADER_FLOOR = 2 << 20

_INPUT_BYTES = 1 << 16  # compressed bytes per read
_OUTPUT_BYTES = 1 << 20  # inflated bytes per step
_LOOKBACK = 1 << 16  # how far a reader may seek back (pydicom rewinds a few bytes to peek)
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}


def file_meta_syntax(fp: BinaryIO) -> tuple[str | None, int]:
    """The TransferSyntaxUID of the File Meta at the start of ``fp`` (after a preamble if there is one), and
    the offset where the dataset starts; (None, 0) without a File Meta.

    Walks the group 0002 elements (always explicit VR little endian) without converting them: a few
    microseconds, where a pydicom parse of the meta costs a third of a millisecond.
    """
    fp.seek(0)
    head = fp.read(132)
    offset = 132 if head[128:132] == b"DICM" else 0
    fp.seek(offset)
    syntax = None
    while True:
        header = fp.read(8)
        if len(header) < 8 or header[:2] != b"\x02\x00":
            return syntax, offset
        element = struct.unpack("<H", header[2:4])[0]
        if header[4:6] in _LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                return syntax, offset
            length, size = struct.unpack("<I", extra)[0], 12
        else:
            length, size = struct.unpack("<H", header[6:8])[0], 8
        value = fp.read(length) if element == 0x0010 and length < 256 else None
        if value is not None:
            syntax = value.decode("ascii", "replace").strip("\x00 ")
        elif length:
            fp.seek(length, 1)
        offset += size + length


def inflated_dataset(
    fp: BinaryIO, *, source: str, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES, header: bool = False
) -> InflatingReader:
    """An InflatingReader over the dataset of the deflated file ``fp``, positioned at its start."""
    _, start = file_meta_syntax(fp)
    fp.seek(start)
    return InflatingReader(fp, source=source, max_bytes=max_bytes, header=header)


class InflatingReader:
    """A read-only file object over the raw deflate stream that starts at the current position of ``raw``.

    ``read``, ``tell`` and ``seek`` count positions in the inflated dataset. Seeking forward inflates and drops
    what it passes; seeking back is possible for ``_LOOKBACK`` bytes. Raises DecompressionBombError when the
    stream inflates past ``max_bytes`` or the ratio limit (or, for a ``header``, hands out bytes past the
    header ratio limit), InputError when the stream is corrupt.
    """

    def __init__(
        self, raw: BinaryIO, *, source: str, max_bytes: int = DEFAULT_MAX_INFLATED_BYTES, header: bool = False
    ) -> None:
        self.name = source
        self._header = header
        self._handed_out = 0
        self._raw = raw
        self._source = source
        self._max_bytes = max_bytes
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._data = bytearray()  # inflated bytes from position _base on
        self._base = 0
        self._position = 0
        self._consumed = 0
        self._produced = 0
        self._ended = False

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = self._base + len(self._data)
        want = None if size is None or size < 0 else self._position + size
        while (want is None or end < want) and self._inflate():
            end = self._base + len(self._data)
            self._check_header(self._handed_out + end - self._position)
        stop = end if want is None else min(want, end)
        start = min(self._position, stop)
        self._check_header(self._handed_out + stop - start)
        with memoryview(self._data) as view:
            out = bytes(view[start - self._base : stop - self._base])
        self._position = start + len(out)
        self._forget_before(self._position - _LOOKBACK)
        self._handed_out += len(out)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._position + offset}.get(whence)
        if target is None:
            raise OSError("an inflating reader cannot seek from the end")
        if target < self._base:
            raise OSError(f"an inflating reader cannot seek back to {target} (kept from {self._base})")
        while self._base + len(self._data) < target and self._inflate():
            self._forget_before(target - _LOOKBACK)
        self._position = target
        return target

    def _inflate(self) -> bool:
        """Inflate the next chunk into ``_data``; False at the end of the stream."""
        if self._ended:
            return False
        data = self._inflater.unconsumed_tail
        if not data:
            data = self._raw.read(_INPUT_BYTES)
            self._consumed += len(data)
        if not data:
            self._ended = True  # a truncated stream: the reader sees the end of the file
            return False
        # Never past the limit, except by the one byte that proves the stream goes beyond it.
        room = max(min(self._max_bytes - self._produced, _OUTPUT_BYTES), 1)
        try:
            out = self._inflater.decompress(data, room)
        except zlib.error as e:
            raise InputError(self._source, f"corrupt deflated dataset ({e})") from e
        self._produced += len(out)
        self._check_limits()
        self._data += out
        if self._inflater.eof:
            self._ended = True
        return True

    def _check_limits(self) -> None:
        if self._produced > self._max_bytes:
            raise DecompressionBombError(
                self._source, f"the deflated dataset inflates past the limit of {self._max_bytes} bytes"
            )
        if self._produced > RATIO_FLOOR and self._produced > MAX_RATIO * self._consumed:
            raise DecompressionBombError(
                self._source,
                f"the deflated dataset inflates more than {MAX_RATIO:.0f}x "
                f"({self._produced} bytes from {self._consumed}): refused as a decompression bomb",
            )

    def _check_header(self, handed_out: int) -> None:
        if self._header and handed_out > HEADER_FLOOR and handed_out > HEADER_RATIO * self._consumed:
            raise DecompressionBombError(
                self._source,
                f"the deflated header inflates more than {HEADER_RATIO:.0f}x "
                f"({handed_out} bytes read from {self._consumed}): refused as a decompression bomb",
            )

    def _forget_before(self, position: int) -> None:
        position = min(position, self._base + len(self._data))
        if position - self._base > _LOOKBACK:
            del self._data[: position - self._base]
            self._base = position
