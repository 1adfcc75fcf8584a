"""Data loaders: schemas, formats, bad rows (raise naming file/row/field, or counted skip)."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm.data.loaders import (
    BOXED_INSTRUCTION,
    DataError,
    Example,
    check_prompt_lengths,
    get_path,
    load_examples,
    render_prompt,
)

DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
)


def dapo_row(problem: str, answer, index: int = 0) -> dict:
    return {
        "data_source": "math_dapo",
        "prompt": [{"role": "user", "content": f"{DAPO_INSTRUCTION}\n\n{problem}"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": answer, "style": "rule-math"},
        "extra_info": {"index": f"id-{index}"},
    }


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def write_parquet(path, rows, row_group_size=None) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return str(path)


# ----------------------------------------------------------------------------- good files


def test_dapo_parquet_keeps_prompt_and_reads_nested_ground_truth(tmp_path):
    path = write_parquet(tmp_path / "dapo.parquet", [dapo_row("1+1?", "2"), dapo_row("2+2?", "4")])
    res = load_examples(path)
    assert res.skipped == 0 and res.problems == []
    ex = res.examples[1]
    assert ex == Example(
        messages=({"role": "user", "content": f"{DAPO_INSTRUCTION}\n\n2+2?"},),
        answer="4",
        source=path,
        row=1,
    )
    # DAPO prompts carry their own "Answer:" instruction: no boxed instruction is added.
    assert BOXED_INSTRUCTION not in ex.messages[0]["content"]


def test_plain_jsonl_adds_boxed_instruction(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": " What is 2+3? ", "answer": "5"}])
    (ex,) = load_examples(path).examples
    assert ex.messages == ({"role": "user", "content": f"What is 2+3?\n{BOXED_INSTRUCTION}"},)
    assert ex.answer == "5" and ex.row == 0


def test_aime_style_capitalised_fields_integer_and_float_answers(tmp_path):
    rows = [
        {"ID": "2024-I-1", "Year": 2024, "Problem": "P1", "Answer": 204},
        {"ID": "2024-I-2", "Year": 2024, "Problem": "P2", "Answer": 25.0},
        {"ID": "2024-I-3", "Year": 2024, "Problem": "P3", "Answer": 0.5},
    ]
    for path in (
        write_parquet(tmp_path / "a.parquet", rows),
        write_jsonl(tmp_path / "a.jsonl", rows),
    ):
        res = load_examples(path, schema="plain")
        assert [e.answer for e in res.examples] == ["204", "25", "0.5"]


def test_json_list_and_limit(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"problem": f"p{i}", "answer": str(i)} for i in range(5)]))
    res = load_examples(path, limit=3)
    assert [e.answer for e in res.examples] == ["0", "1", "2"]


def test_field_map_with_dotted_paths_and_chat_prompt(tmp_path):
    rows = [{"q": {"text": "Compute 7*6."}, "meta": {"label": {"value": 42}}}]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    (ex,) = load_examples(
        path, field_map={"problem": "q.text", "answer": "meta.label.value"}
    ).examples
    assert ex.answer == "42" and ex.messages[0]["content"].startswith("Compute 7*6.")
    chat = [{"conv": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}]}]
    for r in chat:
        r["gt"] = "1"
    path = write_jsonl(tmp_path / "c.jsonl", chat)
    (ex,) = load_examples(
        path, schema="fields", field_map={"prompt": "conv", "answer": "gt"}
    ).examples
    assert [m["role"] for m in ex.messages] == ["system", "user"]


def test_get_path():
    rec = {"a": {"b": [{"c": 1}]}}
    assert get_path(rec, "a.b.0.c") == 1
    assert get_path(rec, "a.x") is get_path(rec, "a.b.5") is get_path(rec, "a.b.c")


def test_blank_jsonl_lines_are_not_rows(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", ["", json.dumps({"problem": "p", "answer": "1"})])
    assert load_examples(path).examples[0].row == 0


# ----------------------------------------------------------------------------- bad rows

GOOD = {"problem": "p", "answer": "1"}
BAD_ROWS = [
    ({"answer": "1"}, "'problem': missing"),
    ({"problem": "p"}, "'answer': missing"),
    ({"problem": "   ", "answer": "1"}, "'problem': empty prompt"),
    ({"problem": 7, "answer": "1"}, "'problem': expected a string, got int"),
    ({"problem": "p", "answer": ["1"]}, "'answer': expected a string or number, got list"),
    ({"problem": "p", "answer": {"v": 1}}, "'answer': expected a string or number, got dict"),
    ({"problem": "p", "answer": None}, "'answer': is null"),
    ({"problem": "p", "answer": True}, "'answer': expected a string or number, got bool"),
    ({"problem": "p", "answer": ""}, "'answer': empty answer"),
    ('{"problem": "p", "answer": NaN}', "'answer': answer is not finite"),
    ('{"problem": "p", "answer": Infinity}', "'answer': answer is not finite"),
    ('{"problem": "p", "answer": ', "invalid JSON"),
    ("[1, 2]", "expected an object, got list"),
    # what the tokenizer would choke on at step n, or json.loads cannot convert
    ('{"problem": "a\\ud800b", "answer": "1"}', "'problem': contains a lone UTF-16 surrogate"),
    ('{"problem": "p", "answer": "x\\udfff"}', "'answer': contains a lone UTF-16 surrogate"),
    ('{"problem": "p", "answer": ' + "7" * 4301 + "}", "integer of more than 4300 digits"),
    ('{"problem": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_jsonl_row_raises_naming_file_row_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        load_examples(path, schema="plain")
    assert f"{path}: row 2 (line 3): " in str(err.value)
    assert message in str(err.value)


def test_skip_mode_counts_and_lists_every_bad_row(tmp_path):
    rows = [GOOD, *[b for b, _ in BAD_ROWS], GOOD]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    res = load_examples(path, schema="plain", on_error="skip")
    assert len(res.examples) == 2 and [e.row for e in res.examples] == [0, len(rows) - 1]
    assert res.skipped == len(BAD_ROWS) == len(res.problems)
    for k, (problem, (_, message)) in enumerate(zip(res.problems, BAD_ROWS), start=1):
        assert problem.startswith(f"{path}: row {k} (line {k + 1}): ") and message in problem


def test_bad_dapo_rows(tmp_path):
    rows = [
        dapo_row("ok", "1"),
        {**dapo_row("x", "1"), "prompt": [{"role": "user", "content": "  "}]},
        {**dapo_row("x", "1"), "prompt": "a string"},
        {**dapo_row("x", "1"), "prompt": [{"role": "robot", "content": "hi"}]},
        {**dapo_row("x", "1"), "reward_model": {"style": "rule"}},
        dapo_row("x", [1, 2]),
    ]
    path = write_jsonl(tmp_path / "dapo.jsonl", rows)
    res = load_examples(path, schema="dapo", on_error="skip")
    assert res.skipped == 5 and len(res.examples) == 1
    expected = [
        "'prompt': empty prompt",
        "'prompt': expected a non-empty list of chat messages",
        "'prompt.0.role': expected one of",
        "'reward_model.ground_truth': missing",
        "'reward_model.ground_truth': expected a string or number, got list",
    ]
    for problem, message in zip(res.problems, expected):
        assert message in problem


def test_bad_parquet_row_names_row_and_field(tmp_path):
    rows = [{"problem": "p", "answer": "1"}, {"problem": "", "answer": "2"}]
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError, match=r"bad\.parquet: row 1: field 'problem': empty prompt"):
        load_examples(path)


def test_parquet_nan_answer_rejected(tmp_path):
    path = write_parquet(tmp_path / "n.parquet", [{"problem": "p", "answer": math.nan}])
    with pytest.raises(DataError, match="row 0: field 'answer': answer is not finite"):
        load_examples(path)


# ----------------------------------------------------------------------------- bad files


def test_truncated_parquet_raises_in_both_modes(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet(path, [{"problem": f"p{i}", "answer": str(i)} for i in range(100)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for mode in ("raise", "skip"):
        with pytest.raises(DataError, match=r"t\.parquet: cannot read parquet file"):
            load_examples(path, on_error=mode)


def test_corrupt_row_group_is_skipped_as_a_counted_block(tmp_path):
    path = tmp_path / "g.parquet"
    rows = [{"problem": "x" * 200 + str(i), "answer": str(i)} for i in range(40)]
    write_parquet(path, rows, row_group_size=20)
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(0).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"rows 0-19: unreadable row group 0"):
        load_examples(path)
    res = load_examples(path, on_error="skip")
    assert res.skipped == 20 and [e.row for e in res.examples] == list(range(20, 40))


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported format '.csv'"):
        load_examples(tmp_path / "x.csv")
    (tmp_path / "d.json").write_text('[{"problem": "p",\n "answer": }]')
    with pytest.raises(DataError, match=r"d\.json: invalid JSON file \(line 2\)"):
        load_examples(tmp_path / "d.json")
    (tmp_path / "o.json").write_text('{"problem": "p"}')
    with pytest.raises(DataError, match="must hold a list"):
        load_examples(tmp_path / "o.json")
    path = write_jsonl(tmp_path / "u.jsonl", [{"question_text": "q", "label": 1}])
    with pytest.raises(DataError, match=r"u\.jsonl: row 0 \(line 1\): cannot detect the schema"):
        load_examples(path)
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"problem": "", "answer": "1"}])
    with pytest.raises(DataError, match=r"no usable examples \(1 rows skipped\)"):
        load_examples(path, on_error="skip")
    (tmp_path / "bin.jsonl").write_bytes(b'{"problem": "\xff", "answer": "1"}\n')
    with pytest.raises(DataError, match=r"row 0 \(line 1\): not valid UTF-8"):
        load_examples(tmp_path / "bin.jsonl")


def test_argument_errors(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    with pytest.raises(DataError, match="unknown schema"):
        load_examples(path, schema="csv")
    with pytest.raises(DataError, match="on_error"):
        load_examples(path, on_error="ignore")
    with pytest.raises(DataError, match="limit"):
        load_examples(path, limit=0)
    with pytest.raises(DataError, match="field_map must be a dict with 'answer'"):
        load_examples(path, field_map={"problem": "problem"})


# ----------------------------------------------------------------------------- prompts


class CharTokenizer:
    """One token per character; optional chat template (a marker, like a real one)."""

    bos_token = None

    def __init__(self, chat_template: bool) -> None:
        self.chat_template = "tmpl" if chat_template else None

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        body = "".join(f"<|{m['role']}|>{m['content']}" for m in messages)
        return body + "<|assistant|>"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": list(range(len(text)))}


def test_render_prompt_chat_template_and_plain():
    ex = Example(
        ({"role": "system", "content": "S"}, {"role": "user", "content": "Q"}), "1", "f", 0
    )
    assert render_prompt(ex, CharTokenizer(True)) == "<|system|>S<|user|>Q<|assistant|>"
    plain = "System: S\nUser: Q\nAssistant:"
    assert render_prompt(ex, CharTokenizer(False)) == plain
    assert render_prompt(ex, CharTokenizer(True), chat_template=False) == plain


def test_check_prompt_lengths(tmp_path):
    rows = [{"problem": "x" * n, "answer": "1"} for n in (5, 500, 10)]
    examples = load_examples(write_jsonl(tmp_path / "l.jsonl", rows), instruction=None).examples
    tok = CharTokenizer(False)  # "User: " + problem + "\nAssistant:" = 17 + n characters
    # The budget is inclusive: 27 keeps the 10-character problem, 26 drops it.
    assert [e.row for e in check_prompt_lengths(examples, tok, 27, on_error="skip").examples] == [
        0,
        2,
    ]
    assert [e.row for e in check_prompt_lengths(examples, tok, 26, on_error="skip").examples] == [0]
    with pytest.raises(
        DataError, match=r"l\.jsonl: row 1: field 'prompt': rendered prompt has 517"
    ):
        check_prompt_lengths(examples, tok, 100)
    res = check_prompt_lengths(examples, tok, 100, on_error="skip")
    assert [e.row for e in res.examples] == [0, 2] and res.skipped == 1


def test_real_tokenizer_chat_template(tmp_path):
    tiny = pytest.importorskip("llm.data.tiny")
    transformers = pytest.importorskip("transformers")
    out = tiny.build_tiny(tmp_path / "tiny")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ex = Example(({"role": "user", "content": "1 plus 2"},), "3", "f", 0)
    text = render_prompt(ex, tok)
    assert "1 plus 2" in text and text != render_prompt(ex, tok, chat_template=False)
    res = check_prompt_lengths([ex], tok, 10_000)
    assert res.examples == [ex]


def test_unreadable_json_file_and_surrogates_in_chat_messages(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="deep.json: invalid JSON: nested too deeply"):
        load_examples(deep)
    big = tmp_path / "big.json"
    big.write_text('[{"problem": "p", "answer": ' + "9" * 5000 + "}]")
    with pytest.raises(DataError, match="more than 4300 digits"):
        load_examples(big)
    row = dapo_row("ok", "1")
    row["prompt"][0]["content"] = "bad \ud83d half of an emoji"
    path = write_jsonl(tmp_path / "d.jsonl", [dapo_row("ok", "1"), row])
    with pytest.raises(DataError, match=r"row 1 \(line 2\): field 'prompt.0.content': contains a"):
        load_examples(path)
    assert load_examples(path, on_error="skip").skipped == 1


def test_every_prompt_goes_through_the_tokenizer_at_load_time(tmp_path):
    """max_prompt_tokens=None still renders and tokenizes each prompt: a prompt the tokenizer
    (or its chat template) refuses is a row error now, not a crash at the step that draws it."""

    class Picky(CharTokenizer):
        def __call__(self, text, add_special_tokens=True):
            if "\x07" in text:
                raise ValueError("unsupported character")
            return super().__call__(text, add_special_tokens=add_special_tokens)

    rows = [{"problem": "fine", "answer": "1"}, {"problem": "bell \x07", "answer": "1"}]
    examples = load_examples(write_jsonl(tmp_path / "t.jsonl", rows)).examples
    with pytest.raises(DataError, match=r"t\.jsonl: row 1: field 'prompt': the tokenizer cannot"):
        check_prompt_lengths(examples, Picky(False), None)
    res = check_prompt_lengths(examples, Picky(False), None, on_error="skip")
    assert [e.row for e in res.examples] == [0] and res.skipped == 1
