"""RunLogger: strict JSON lines whatever the values, TensorBoard scalars, sample tables."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.runstate.logging import RunLogger, format_table, sanitize, truncate_metrics


def strict_lines(path):
    """Parse with a reader that rejects NaN/Infinity tokens (invalid JSON)."""

    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=bad) for line in path.read_text().splitlines()]


def test_log_writes_one_strict_line_per_call(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        log.log(
            1, {"reward/mean": 0.5, "clip_ratio/high": np.float32(0.25), "kl": torch.tensor(2.0)}
        )
        log.log(2, {"reward/mean": float("nan"), "loss/policy": float("inf"), "n": np.int64(3)})
        log.log(3, {"grad_norm": -math.inf, "ok": True, "note": "x"})
    lines = strict_lines(tmp_path / "metrics.jsonl")
    assert lines[0] == {"step": 1, "reward/mean": 0.5, "clip_ratio/high": 0.25, "kl": 2.0}
    assert lines[1] == {
        "step": 2,
        "reward/mean": None,
        "loss/policy": None,
        "n": 3,
        "log/nonfinite_values": 2,
    }
    assert lines[2]["grad_norm"] is None and lines[2]["log/nonfinite_values"] == 3
    assert lines[2]["ok"] is True and lines[2]["note"] == "x"


def test_line_is_flushed_before_close(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False)
    log.log(7, {"a/b": 1.0})
    assert strict_lines(tmp_path / "metrics.jsonl") == [{"step": 7, "a/b": 1.0}]
    log.close()
    log.close()  # idempotent


def test_non_scalars_dropped_with_one_warning(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        with pytest.warns(UserWarning, match="problems"):
            log.log(1, {"eval/avg@4": 0.5, "problems": [{"row": 0}]})
        with pytest.warns(UserWarning) as record:
            log.log(2, {"problems": [1], "t": torch.zeros(3)})
        assert [str(w.message) for w in record] == ["metric 't' is not a scalar; not logged"]
    lines = strict_lines(tmp_path / "metrics.jsonl")
    assert lines == [{"step": 1, "eval/avg@4": 0.5}, {"step": 2}]
    with pytest.raises(TypeError, match="keys"):
        sanitize({1: 2.0})


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**60), 2**60),
    st.booleans(),
    st.none(),
    st.text(max_size=20),
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=6))
def test_sanitize_always_yields_strict_json(metrics):
    clean, nonfinite, dropped = sanitize(metrics)
    assert not dropped
    text = json.dumps(clean, allow_nan=False)
    assert nonfinite == sum(isinstance(v, float) and not math.isfinite(v) for v in metrics.values())
    back = json.loads(text)
    for key, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            assert back[key] is None
        else:
            assert back[key] == v


def test_tensorboard_scalars_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path) as log:
        for step in range(3):
            log.log(step, {"reward/mean": 0.1 * step, "bad": float("nan"), "s": "text"})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["log/nonfinite_values", "reward/mean"]
    got = [(e.step, round(e.value, 6)) for e in acc.Scalars("reward/mean")]
    assert got == [(0, 0.0), (1, 0.1), (2, 0.2)]


def test_samples_jsonl_and_table(tmp_path):
    out = io.StringIO()
    rows = [
        {"prompt": "What is 2+2?", "completion": "It is \\boxed{4}\n" * 30, "reward": 1.0},
        {"prompt": "1+1?", "completion": "3", "reward": float("nan"), "extra": [1, 2]},
    ]
    with RunLogger(tmp_path, tensorboard=False, stream=out) as log:
        log.samples(5, rows)
    got = strict_lines(tmp_path / "samples.jsonl")
    assert got[0]["step"] == 5 and got[0]["completion"] == rows[0]["completion"]
    assert got[1]["reward"] is None and got[1]["extra"] == "[1, 2]"
    table = out.getvalue()
    assert "samples @ step 5" in table and "What is 2+2?" in table
    assert "chars)" in table  # the long completion is cut, not dumped whole
    assert max(len(line) for line in table.splitlines()) < 120
    assert "(none)" in format_table(1, [])


def test_resume_truncates_lines_after_checkpoint(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as log:
        for step in range(1, 6):
            log.log(step, {"x": step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "x"')  # torn line of a killed run
    with RunLogger(tmp_path, tensorboard=False, resume_step=3) as log:
        log.log(4, {"x": 40})
    assert [r["x"] for r in strict_lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 40]
    assert truncate_metrics(tmp_path / "missing.jsonl", 1) == 0


HOSTILE_TEXT = [
    "\x1b[2J\x1b[H",  # ANSI: clear the screen, cursor home
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # OSC 52: write the clipboard (BEL-terminated)
    "\x1b]0;fake title\x1b\\",  # OSC 0: retitle the window (ST-terminated)
    "\x9b31m",  # C1 CSI
    "abc\rXYZ\b\x7f",  # carriage return, backspace, DEL overwrite what was printed
    "\u202eevil\u202c \u200b\ufeff",  # bidi override, zero-width characters
    "\ud800",  # a lone surrogate
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_sample_table_neutralises_control_characters(tmp_path, text):
    out = io.StringIO()
    with RunLogger(tmp_path, tensorboard=False, stream=out) as log:
        log.samples(1, [{"prompt": "p", "completion": f"ok {text} end", "answer": text}])
    table = out.getvalue()
    body = table.replace("\n", "")  # the table's own line breaks
    assert body.isprintable(), [c for c in body if not c.isprintable()]
    assert "ok " in table and " end" in table
    assert strict_lines(tmp_path / "samples.jsonl")[0]["answer"] == text  # the record stays raw


def test_printable_keeps_text_readable():
    from llm.runstate.logging import printable

    assert printable("x = \\boxed{4}, 直角三角形 ∑ é") == "x = \\boxed{4}, 直角三角形 ∑ é"
    assert printable("a\nb\tc") == "a ⏎ b c"
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("\u202e") == "\\u202e"
