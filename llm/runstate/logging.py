"""Run logging: `metrics.jsonl` (one strict-JSON line per step), TensorBoard scalars and a table
of sample completions (`samples.jsonl` plus a readable text table on stdout).

Logs are data: every line of `metrics.jsonl` is `{"step": int, "<namespace>/<name>": value, ...}`
parsable by any strict JSON reader. Non-finite floats (NaN, ±inf) are written as `null` and
counted under `log/nonfinite_values`, because a week-long run must not die on one bad number.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import sys
import textwrap
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"


def to_json_scalar(value: Any) -> tuple[bool, Any]:
    """(ok, value) with `value` a JSON scalar: bools, ints, finite floats, strings and None
    pass; numpy and 0-d / one-element torch tensors become python numbers; non-finite floats
    become None. ok is False for anything else (lists, dicts, multi-element tensors)."""
    if value is None or isinstance(value, (bool, str)):
        return True, value
    if hasattr(value, "numel") and hasattr(value, "item"):  # torch tensor, without importing torch
        if value.numel() != 1:
            return False, None
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar / 0-d
        value = value.item()
    if isinstance(value, bool):
        return True, value
    if isinstance(value, numbers.Integral):
        return True, int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return True, value if math.isfinite(value) else None
    return False, None


def sanitize(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
    """(clean, n_nonfinite, dropped_keys): `clean` holds JSON scalars only."""
    clean: dict[str, Any] = {}
    nonfinite, dropped = 0, []
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric keys must be strings, got {key!r}")
        ok, v = to_json_scalar(value)
        if not ok:
            dropped.append(key)
            continue
        if v is None and value is not None:
            nonfinite += 1
        clean[key] = v
    return clean, nonfinite, dropped


def truncate_metrics(path: str | os.PathLike, after_step: int) -> int:
    """Drop lines of a metrics/samples JSONL whose `step` is > after_step (for an exact resume
    from a checkpoint at `after_step`); a torn last line from a crash is dropped too. The file
    is replaced atomically. Returns how many lines were removed."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, removed = [], 0
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            removed += 1
            continue
        if step > after_step:
            removed += 1
        else:
            kept.append(line)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return removed


class RunLogger:
    """Writes a run's logs under `run_dir`.

    `log(step, metrics)` appends one flushed line to metrics.jsonl (and TensorBoard scalars to
    `run_dir/tb` when `tensorboard` is True and `torch.utils.tensorboard` imports). Values that
    are not scalars (lists, dicts, multi-element tensors) are left out with a one-time warning.
    `resume_step`: when resuming from a checkpoint, lines logged after that step by the
    interrupted run are removed first, so the file reads like one uninterrupted run.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.run_dir / METRICS, resume_step)
            truncate_metrics(self.run_dir / SAMPLES, resume_step)
        self._metrics = open(self.run_dir / METRICS, "a", encoding="utf-8")
        self._samples: TextIO | None = None
        self._stream = stream
        self._warned: set[str] = set()
        self.nonfinite_values = 0
        self._tb = self._open_tensorboard(resume_step) if tensorboard else None

    def _open_tensorboard(self, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard is optional
            warnings.warn(f"TensorBoard disabled: {e}", stacklevel=3)
            return None
        kwargs = {"purge_step": resume_step + 1} if resume_step is not None else {}
        return SummaryWriter(log_dir=str(self.run_dir / "tb"), **kwargs)

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Append `{"step": step, **metrics}` as one line; return what was written."""
        clean, nonfinite, dropped = sanitize(metrics)
        for key in dropped:
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"metric {key!r} is not a scalar; not logged", stacklevel=2)
        self.nonfinite_values += nonfinite
        if nonfinite:
            clean["log/nonfinite_values"] = self.nonfinite_values
        clean.pop("step", None)
        line = {"step": int(step), **clean}
        self._metrics.write(json.dumps(line, allow_nan=False) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, v in clean.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(key, v, global_step=int(step))
            self._tb.flush()
        return line

    def samples(self, step: int, rows: Iterable[Mapping[str, Any]], *, width: int = 60) -> None:
        """Record sample completions: each row (e.g. prompt, completion, answer, reward) goes to
        samples.jsonl with the step; a text table is printed to stdout."""
        rows = [dict(r) for r in rows]
        if self._samples is None:
            self._samples = open(self.run_dir / SAMPLES, "a", encoding="utf-8")
        for row in rows:
            record = {"step": int(step)}
            for key, value in row.items():
                ok, v = to_json_scalar(value)
                record[str(key)] = v if ok else str(value)
            self._samples.write(json.dumps(record, allow_nan=False) + "\n")
        self._samples.flush()
        stream = self._stream or sys.stdout
        stream.write(format_table(step, rows, width=width))
        stream.flush()

    def close(self) -> None:
        for f in (self._metrics, self._samples):
            if f is not None and not f.closed:
                f.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SHOWN_AS = {"\n": " ⏎ ", "\t": " "}


def printable(text: str) -> str:
    """``text`` made safe for a terminal: every character Python does not call printable
    (C0/C1 controls — so the ESC, BEL and ST bytes of ANSI CSI and OSC escape sequences, which
    can clear the screen, retitle the window or write the clipboard — DEL, bidi overrides,
    zero-width and other format characters, lone surrogates, unusual spaces) is shown as its
    visible escape (``\\x1b``, ``\\u202e``); newlines as " ⏎ ", tabs as a space."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _SHOWN_AS.get(ch) or ascii(ch)[1:-1] for ch in text)


def format_table(step: int, rows: list[dict[str, Any]], *, width: int = 60) -> str:
    """A plain-text table of sample rows: one block per row, long texts wrapped to `width`
    characters and cut after 6 lines, control characters neutralised (``printable``): model
    text never reaches the terminal raw."""
    if not rows:
        return f"── samples @ step {step}: (none)\n"
    total = min(shutil.get_terminal_size((100, 20)).columns, width + 20)
    out = [f"── samples @ step {step} " + "─" * max(0, total - 20)]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    pad = max(len(str(k)) for k in keys)
    for i, row in enumerate(rows):
        out.append(f"[{i}]")
        for key in keys:
            value = row.get(key, "")
            if isinstance(value, float):
                value = f"{value:.4g}"
            raw = str(value)
            text = printable(raw[: 8 * width])  # at most 6 lines of it are shown
            lines = textwrap.wrap(text, width) or [""]
            if len(lines) > 6 or len(raw) > 8 * width:
                lines = lines[:6] + [f"… ({len(raw)} chars)"]
            out.append(f"  {printable(str(key)):<{pad}} │ {lines[0]}")
            out += [f"  {'':<{pad}} │ {line}" for line in lines[1:]]
    return "\n".join(out) + "\n"


class NullLogger:
    """The logger of ranks other than 0 (``llm.parallel.comm``): nothing is written; ``log``
    returns the metrics as given, like ``RunLogger.log`` returns what it wrote."""

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:  # noqa: ARG002
        return dict(metrics)

    def samples(self, step: int, rows: Iterable[Mapping[str, Any]]) -> None:  # noqa: ARG002
        return None

    def close(self) -> None:
        return None
