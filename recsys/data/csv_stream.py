"""Raw CSV files read as a stream: decompressed, decoded and parsed block by block, with precise errors.

:class:`CsvStream` reads one raw CSV (or gzipped CSV) file: :meth:`~CsvStream.header`, then
:meth:`~CsvStream.records`, each :class:`Record` with the physical lines it spans and its raw text;
it hashes and measures the file as it goes. The ingest stage stages raw drops with it and the CSV
history lands files with it; :func:`read_header` reads only a file's first lines.

A file that cannot be read as comma-separated UTF-8 text raises :class:`DataReadError` naming the
file and, where it applies, the line: wrong encoding (UTF-16, a byte that is not UTF-8), corrupt or
truncated gzip, binary content (NUL bytes), another delimiter, an empty file, no header row, a
duplicated header column, a quoted field that never closes, or a plain file cut in the middle of its
last record (a malformed last record with no line end).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recsys.core.errors import DataReadError

_BLOCK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


class _Bytes:
    """The decompressed bytes of a raw file, block by block; hashes and measures the file as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.sha256 = ""
        self.size_bytes = 0

    def _file_blocks(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise DataReadError(f"{self.name}: cannot read file ({exc.strerror or exc})") from None
        with handle:
            while True:
                try:
                    block = handle.read(_BLOCK_BYTES)
                except OSError as exc:
                    raise DataReadError(f"{self.name}: cannot read file ({exc.strerror or exc})") from None
                if not block:
                    break
                digest.update(block)
                self.size_bytes += len(block)
                yield block
        self.sha256 = digest.hexdigest()

    def blocks(self) -> Iterator[bytes]:
        if self.name.endswith(".gz"):
            yield from _with_head(self._gunzip(self._file_blocks()))
            return
        first = True
        for block in _with_head(self._file_blocks()):
            if first and block.startswith(_GZIP_MAGIC):
                raise DataReadError(
                    f"{self.name}: the file is gzip-compressed but named .csv; rename it to {self.name}.gz"
                )
            first = False
            yield block

    def _gunzip(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        decompressor = zlib.decompressobj(wbits=31)
        in_member = False  # compressed input was fed to a member that has not ended yet
        for block in blocks:
            data = block
            while data:
                in_member = True
                try:
                    out = decompressor.decompress(data)
                except zlib.error as exc:
                    raise DataReadError(
                        f"{self.name}: not a valid gzip file ({exc}); copy or export the file again"
                    ) from None
                if out:
                    yield out
                if decompressor.eof:  # end of a member: what follows may be another member
                    in_member = False
                    data = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
                else:
                    data = b""
        if in_member:
            raise DataReadError(
                f"{self.name}: gzip data is truncated (the file ends before the end of the compressed "
                "stream); copy or export the file again"
            )


def _with_head(blocks: Iterator[bytes], size: int = 4) -> Iterator[bytes]:
    """The same bytes, with a first block of at least ``size`` bytes (for magic numbers and BOMs)."""
    head = b""
    for block in blocks:
        head += block
        if len(head) >= size:
            break
    if head:
        yield head
    yield from blocks


class _Text:
    """Decodes blocks of bytes as UTF-8, reporting the line and column of a bad byte."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0  # bytes before the current block
        self._newlines = 0  # b"\n" before the current block
        self._last_newline = -1  # offset of the last b"\n" before the current block
        self.seen_text = False

    def _position(self, block: bytes, rel: int) -> tuple[int, int]:
        """1-based (line, column) of byte ``rel`` of ``block`` (negative: in the previous block)."""
        if rel <= 0:
            return self._newlines + 1, self._offset + rel - self._last_newline
        last = block.rfind(b"\n", 0, rel)
        last_abs = self._offset + last if last >= 0 else self._last_newline
        return self._newlines + block.count(b"\n", 0, rel) + 1, self._offset + rel - last_abs

    def decode(self, blocks: Iterator[bytes]) -> Iterator[str]:
        first = True
        for block in blocks:
            skip = 0
            if first:
                if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise DataReadError(
                        f"{self.name} line 1: the file is UTF-16 encoded; re-export the file as UTF-8"
                    )
                skip = len(codecs.BOM_UTF8) if block.startswith(codecs.BOM_UTF8) else 0
                first = False
            nul = block.find(b"\x00")
            if nul >= 0:
                line, column = self._position(block, nul)
                raise DataReadError(
                    f"{self.name} line {line}: contains a NUL byte (column {column}); this looks like a "
                    "binary or corrupt file, not CSV text"
                )
            text = self._decode(block, skip, final=False)
            self._advance(block)
            if text:
                yield text
        text = self._decode(b"", 0, final=True)
        if text:
            yield text

    def _decode(self, block: bytes, skip: int, final: bool) -> str:
        pending = len(self._decoder.getstate()[0])  # bytes of an unfinished character, from before
        try:
            text = self._decoder.decode(block[skip:] if skip else block, final)
        except UnicodeDecodeError as exc:
            rel = exc.start - pending + skip
            line, column = self._position(block, rel)
            raise DataReadError(
                f"{self.name} line {line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column "
                f"{column}); re-export the file as UTF-8"
            ) from None
        if not self.seen_text and text.strip():
            self.seen_text = True
        return text

    def _advance(self, block: bytes) -> None:
        self._newlines += block.count(b"\n")
        last = block.rfind(b"\n")
        if last >= 0:
            self._last_newline = self._offset + last
        self._offset += len(block)


def _physical_lines(texts: Iterator[str]) -> Iterator[str]:
    """Physical lines with their line ends (``\\r\\n``, ``\\r`` or ``\\n``), across block boundaries."""
    carry = ""
    for piece in texts:
        text = carry + piece
        hold = text.endswith("\r")  # the next block may start with the "\n" of a "\r\n"
        lines = io.StringIO(text[:-1] if hold else text, newline="").readlines()
        carry = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        if hold:
            carry += "\r"
        yield from lines
    if carry:
        yield carry


class _LineSource:
    """Feeds physical lines to ``csv.reader`` and remembers which lines the last record used."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.lineno = 0
        self.buffer: list[str] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.lineno += 1
        self.buffer.append(line)
        return line

    def take(self) -> tuple[int, int, str, bool]:
        """First physical line, number of lines, raw text and whether it ended with a line end, of
        the record just read."""
        first, count = self.lineno - len(self.buffer) + 1, len(self.buffer)
        raw = "".join(self.buffer)
        self.buffer = []
        text = raw.rstrip("\r\n")
        return first, count, text, len(text) != len(raw)


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _check_header(name: str, line: int, header: list[str], expected: tuple[str, ...]) -> list[str]:
    names = [h.strip() for h in header]
    if len(names) == 1 and len(expected) > 1:
        for delimiter, label in _OTHER_DELIMITERS.items():
            if delimiter in names[0]:
                raise DataReadError(
                    f"{name} line {line}: the header is a single column containing {label}s "
                    f"({names[0][:80]!r}); the file looks {label}-separated, but comma-separated CSV "
                    "is expected"
                )
    if expected and not set(names) & set(expected):
        raise DataReadError(
            f"{name} line {line}: no header row found (the first line {','.join(header)[:80]!r} has "
            f"none of the expected column names {', '.join(expected)}); add the header row"
        )
    names = [h or f"unnamed_{i + 1}" for i, h in enumerate(names)]
    seen: set[str] = set()
    for h in names:
        if h in seen:
            raise DataReadError(f"{name} line {line}: column {h!r} appears more than once in the header")
        seen.add(h)
    return names


@dataclass
class Record:
    line: int  # first physical line of the record
    lines: int  # physical lines it spans
    fields: list[str]
    raw: str  # the record's text as read, without its final line end
    ended: bool  # the record's last line had a line end


class CsvStream:
    """One raw CSV (or gzipped CSV) file, read as a stream: :meth:`header`, then :meth:`records`.

    ``expected_columns`` (the contract) is only used to recognise a missing header row and another
    delimiter; the header found is kept as it is. Blank lines are counted, not returned.
    """

    def __init__(self, path: Path, expected_columns: tuple[str, ...] = ()) -> None:
        self.path = path
        self.name = path.name
        self.expected = tuple(expected_columns)
        self.blank_lines = 0
        self._bytes = _Bytes(path)
        self._text = _Text(self.name)
        self._blocks = self._bytes.blocks()
        self._source = _LineSource(_physical_lines(self._text.decode(self._blocks)))
        self._reader = csv.reader(self._source)
        self._header: list[str] | None = None
        self.header_line = 0

    @property
    def sha256(self) -> str:
        return self._bytes.sha256

    @property
    def size_bytes(self) -> int:
        return self._bytes.size_bytes

    def _next(self) -> Record | None:
        try:
            row = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            first = self._source.lineno - len(self._source.buffer) + 1
            raise DataReadError(
                f"{self.name} line {first}: cannot parse CSV ({exc}); check for an unclosed quote"
            ) from None
        line, count, raw, ended = self._source.take()
        return Record(line, count, row, raw, ended)

    def _next_filled(self) -> Record | None:
        """The next non-blank record (blank lines are counted)."""
        while True:
            record = self._next()
            if record is None or not _is_blank(record.fields):
                return record
            if self._header is not None:
                self.blank_lines += record.lines

    def header(self) -> list[str]:
        if self._header is None:
            record = self._next_filled()
            if record is None:
                raise DataReadError(f"{self.name}: the file is empty (expected a header row and data lines)")
            self._header = _check_header(self.name, record.line, record.fields, self.expected)
            self.header_line = record.line
        return self._header

    def records(self) -> Iterator[Record]:
        """Every non-blank record after the header, well-formed or not.

        Raises DataReadError when the file ends inside a quoted field, or in the middle of a record
        of the wrong length with no line end (a truncated file).
        """
        width = len(self.header())
        current = self._next_filled()
        while current is not None:
            following = self._next_filled()
            if following is None:
                self._check_last(current, width)
            yield current
            current = following

    def _check_last(self, record: Record, width: int) -> None:
        if record.raw.count('"') % 2 == 1:
            try:  # does the record end inside a quoted field?
                list(csv.reader(io.StringIO(record.raw + "\n", newline=""), strict=True))
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    raise DataReadError(
                        f"{self.name} line {record.line}: a quoted field opened on this line is never "
                        "closed (the file ends inside it); check for an unclosed quote or a truncated file"
                    ) from None
        if len(record.fields) != width and not record.ended:
            raise DataReadError(
                f"{self.name} line {record.line}: the file ends in the middle of a record (expected "
                f"{width} fields, got {len(record.fields)}, and no line end); the file looks truncated: "
                "copy or export it again"
            )

    def close(self) -> None:
        self._blocks.close()


def read_header(path: Path, expected_columns: tuple[str, ...] = ()) -> list[str]:
    """The header of a raw file (reads only its first lines)."""
    stream = CsvStream(path, expected_columns)
    try:
        return stream.header()
    finally:
        stream.close()
