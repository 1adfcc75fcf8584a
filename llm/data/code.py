"""Code problems from local parquet / jsonl / json files, in LiveCodeBench's shape.

Two row shapes, told apart per row (`question_content` present: LiveCodeBench):

- **lcb** — LiveCodeBench's `code_generation_lite` rows: `question_content` (the statement),
  `starter_code` (may be empty), `public_test_cases` and `private_test_cases` (lists of
  `{input, output, testtype}` with testtype "stdin" or "functional"; each either a list, a JSON
  string, or — as LiveCodeBench ships the private ones — base64 of zlib of a pickled JSON string,
  which is unpickled with no globals allowed, so it can only yield a string) and `metadata`
  (`{"func_name": ...}`, needed for functional tests; a JSON string or an object).
- **tests** — `{problem | question, tests: [{input, output}], fn_name?, starter_code?, prefix?,
  suffix?, extract?}`, what `llm.data.code_tasks` writes and what a hand-made file most easily looks
  like. With `extract: "raw"` the whole completion is the code (HumanEval-style completion; the
  program is `prefix + completion + suffix`) and the prompt is the problem text alone.

The prompt is LiveCodeBench's generic code-generation prompt (statement, then the starter code
to complete or the instruction to read stdin and write stdout, the program in a ```python
block). The example's `answer` is the JSON test spec of `llm.sandbox.judge.encode_tests`, which
the "code" reward reads. Functional test inputs must be one JSON value per line, outputs JSON.

Files are read by `llm.data.loaders.load_examples(path, schema="code")` ("auto" detects code
rows), which calls `convert_code_row` on each row, so the loaders' row-level error rules apply:
on_error="raise" stops at the first bad row with a DataError naming file, row and field; "skip"
drops and counts it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib

from llm.sandbox.judge import EXTRACTS, CodeTest, CodeTests, call_arguments, encode_tests


class CodeRowError(ValueError):
    """A problem with one field of one code row (the loader adds file and row)."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field_name, self.message = field_name, message
        super().__init__(f"field {field_name!r}: {message}")


SYSTEM_PROMPT = (
    "You are an expert Python programmer. You will be given a question (problem "
    "specification) and will generate a correct Python program that matches the specification "
    "and passes all tests."
)
_CALL_FORMAT = (
    "### Format: You will use the following starter code to write the solution to the problem "
    "and enclose your code within delimiters.\n```python\n{starter}\n```\n\n"
)
_STDIN_FORMAT = (
    "### Format: Read the inputs from stdin solve the problem and write the answer to stdout "
    "(do not directly test on the sample inputs). Enclose your code within delimiters as "
    "follows. Ensure that when the python program runs, it reads the inputs, runs the algorithm "
    "and writes output to STDOUT.\n```python\n# YOUR CODE HERE\n```\n\n"
)
#: Largest decompressed private-test blob accepted (a zlib bomb is a row error, not an OOM).
MAX_TESTS_BYTES = 256 * 1024 * 1024
TEST_SETS = ("all", "public")


def code_messages(statement: str, starter_code: str = "") -> tuple[dict[str, str], ...]:
    """LiveCodeBench's generic prompt as chat messages (system + user)."""
    fmt = _CALL_FORMAT.format(starter=starter_code) if starter_code.strip() else _STDIN_FORMAT
    user = f"### Question:\n{statement}\n\n{fmt}### Answer: (use the provided format with backticks)\n\n"
    return ({"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user})


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def _decode_cases(value: object, field: str) -> list:
    """A test-case list from a list, a JSON string, or base64(zlib(pickle(JSON string)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise CodeRowError(field, f"expected a list or a string, got {type(value).__name__}")
    if not value.strip():
        return []
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        data = _decode_packed(value, field)
    if not isinstance(data, list):
        raise CodeRowError(field, f"expected a list of test cases, got {type(data).__name__}")
    return data


def _decode_packed(value: str, field: str) -> object:
    try:
        raw = base64.b64decode(value, validate=True)
        inflater = zlib.decompressobj()
        blob = inflater.decompress(raw, MAX_TESTS_BYTES)
        if inflater.unconsumed_tail:
            raise CodeRowError(field, f"decompresses to more than {MAX_TESTS_BYTES} bytes")
        text = _NoGlobals(io.BytesIO(blob)).load() if blob[:1] == b"\x80" else blob.decode()
        if not isinstance(text, str):
            raise CodeRowError(field, "packed test cases do not hold a JSON string")
        return json.loads(text)
    except CodeRowError:
        raise
    except (binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise CodeRowError(
            field, f"neither JSON nor base64/zlib/pickle test cases ({type(exc).__name__})"
        ) from None


def _cases(raw: list, field: str, fn_name: str | None) -> list[tuple[CodeTest, str]]:
    out = []
    for k, case in enumerate(raw):
        where = f"{field}.{k}"
        if not isinstance(case, dict):
            raise CodeRowError(where, f"expected an object, got {type(case).__name__}")
        inp, outp = case.get("input"), case.get("output")
        if not isinstance(inp, str) or not isinstance(outp, str):
            raise CodeRowError(where, "'input' and 'output' must be strings")
        kind = case.get("testtype", "functional" if fn_name else "stdin")
        if kind not in ("stdin", "functional"):
            raise CodeRowError(f"{where}.testtype", f"expected stdin or functional, got {kind!r}")
        if kind == "functional":
            try:
                call_arguments(inp)
                json.loads(outp)
            except (json.JSONDecodeError, RecursionError):
                raise CodeRowError(where, "functional test input/output is not JSON") from None
        out.append((CodeTest(inp, outp), kind))
    return out


def _metadata_fn(record: dict) -> str | None:
    meta = record.get("metadata") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            raise CodeRowError("metadata", "not valid JSON") from None
    if not isinstance(meta, dict):
        raise CodeRowError("metadata", f"expected an object, got {type(meta).__name__}")
    return meta.get("func_name")


def convert_code_row(record: object, test_set: str = "all") -> tuple[tuple, str]:
    """(messages, answer) of one row: LiveCodeBench's shape when it has `question_content`,
    else the tests shape. `test_set="public"` keeps LiveCodeBench's public tests only.
    Raises CodeRowError naming the field."""
    if test_set not in TEST_SETS:
        raise ValueError(f"test_set must be one of {TEST_SETS}, got {test_set!r}")
    if not isinstance(record, dict):
        raise CodeRowError("<row>", f"expected an object, got {type(record).__name__}")
    schema = "lcb" if "question_content" in record else "tests"
    starter = record.get("starter_code") or ""
    if not isinstance(starter, str):
        raise CodeRowError("starter_code", f"expected a string, got {type(starter).__name__}")
    frame = {"prefix": "", "suffix": "", "extract": "fenced"}
    if schema == "lcb":
        statement, sfield = record.get("question_content"), "question_content"
        fn_name = _metadata_fn(record)
        fields = ["public_test_cases"] + (["private_test_cases"] if test_set == "all" else [])
    else:
        sfield = "problem" if "problem" in record else "question"
        statement, fn_name = record.get(sfield), record.get("fn_name")
        fields = ["tests"]
        for key in frame:
            value = record.get(key, frame[key])
            if not isinstance(value, str) or (key == "extract" and value not in EXTRACTS):
                want = f"one of {EXTRACTS}" if key == "extract" else "a string"
                raise CodeRowError(key, f"expected {want}, got {value!r:.60}")
            frame[key] = value
    if not isinstance(statement, str) or not statement.strip():
        raise CodeRowError(sfield, "missing or empty statement")
    if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
        raise CodeRowError("fn_name", f"expected a Python identifier, got {fn_name!r:.60}")
    cases = []
    for f in fields:
        cases += _cases(_decode_cases(record.get(f, []), f), f, fn_name)
    if not cases:
        raise CodeRowError(fields[0], "no test cases")
    kinds = {kind for _, kind in cases}
    if len(kinds) > 1:
        raise CodeRowError(fields[0], "mixes stdin and functional test cases")
    if kinds == {"functional"} and not fn_name:
        raise CodeRowError("metadata", "functional tests need metadata.func_name")
    fn = fn_name if kinds == {"functional"} else None
    tests = CodeTests(tuple(c for c, _ in cases), fn, **frame)
    if tests.extract == "raw":
        return ({"role": "user", "content": statement.strip()},), encode_tests(tests)
    return code_messages(statement.strip(), starter), encode_tests(tests)
