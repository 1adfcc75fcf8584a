"""Row readers for local .parquet, .jsonl and .json files (private helper of `llm.data.loaders`),
and `write_jsonl`, the one writer of the jsonl files the project makes (tiny tasks, paper data).

Each yields one `Record` per row, 0-based; a row that cannot be read (invalid JSON line, bad
UTF-8, a damaged parquet row group) comes back with `error` set instead of raising, so the caller
can either stop with a message naming it or count it as skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """A data file or row that cannot be used; the message names file, row and field."""


@dataclass
class Record:
    row: int
    where: str  # "row 3" or "row 3 (line 5)"
    value: object = None
    error: str | None = None  # set when the row could not be read at all
    count: int = 1  # rows this record stands for (an unreadable parquet row group: many)


def read_records(path: Path) -> Iterator[Record]:
    """The rows of a .parquet / .jsonl / .json file; unreadable rows come as `Record.error`.

    Raises DataError for a file that cannot be read at all.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_records(path)
    if suffix == ".jsonl":
        return _jsonl_records(path)
    if suffix == ".json":
        return _json_records(path)
    raise DataError(f"{path}: unsupported format {suffix!r}; use .parquet, .jsonl or .json")


def _parquet_records(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # ArrowInvalid, OSError: truncated footer, not parquet at all
        raise DataError(
            f"{path}: cannot read parquet file (truncated or corrupt?): {exc}"
        ) from None
    row = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        try:
            rows = pf.read_row_group(g).to_pylist()
        except Exception as exc:  # a damaged column chunk inside an intact footer
            where = f"rows {row}-{row + n - 1}"
            yield Record(row, where, error=f"unreadable row group {g}: {exc}", count=n)
            row += n
            continue
        for value in rows:
            yield Record(row, f"row {row}", value)
            row += 1


def _jsonl_records(path: Path) -> Iterator[Record]:
    row = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"row {row} (line {lineno})"
            try:
                yield Record(row, where, json.loads(raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                yield Record(row, where, error=f"not valid UTF-8 ({exc.reason})")
            except json.JSONDecodeError as exc:
                yield Record(row, where, error=f"invalid JSON: {exc.msg} at column {exc.colno}")
            except (ValueError, RecursionError) as exc:  # see _unreadable
                yield Record(row, where, error=_unreadable(exc))
            row += 1


def _unreadable(exc: BaseException) -> str:
    """Why ``json.loads`` refused text that is valid JSON syntax: an integer of more than 4300
    digits (Python's int/str conversion limit) or nesting deeper than the recursion limit."""
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply to read (a recursion limit was hit)"
    if "digits" in str(exc):
        return "invalid JSON: an integer of more than 4300 digits (Python's conversion limit)"
    return f"invalid JSON: {' '.join(str(exc).split())[:120]}"


def _json_records(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(f"{path}: invalid JSON file{where}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # no row can be read without the whole file
        raise DataError(f"{path}: {_unreadable(exc)}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json file must hold a list of rows, got {type(data).__name__}")
    for row, value in enumerate(data):
        yield Record(row, f"row {row}", value)


def write_jsonl(rows: Iterable[dict], out: str | os.PathLike) -> Path:
    """Write ``rows`` as JSON lines, atomically (a temporary file, then a rename); the parent
    folder is created. Returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out
