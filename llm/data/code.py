"""Code problems from local parquet / jsonl / json files, in LiveCodeBench's shape.

Two row schemas, detected per file from its first row:

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

Row-level errors follow `llm.data.loaders.load_examples`: on_error="raise" stops at the first bad
row with a DataError naming file, row and field; "skip" drops and counts it. The same rows load
through `load_examples(schema="code")` (or "auto"), which is how the trainer and `ticgrpo eval`
read them; `load_code_problems` adds the choice of LiveCodeBench's public tests only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickle
import zlib
from pathlib import Path

from llm.data.loaders import Example, LoadResult, _fail, _RowError
from llm.data.readers import DataError, read_records
from llm.sandbox.judge import EXTRACTS, CodeTest, CodeTests, call_arguments, encode_tests

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
        raise _RowError(field, f"expected a list or a string, got {type(value).__name__}")
    if not value.strip():
        return []
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        data = _decode_packed(value, field)
    if not isinstance(data, list):
        raise _RowError(field, f"expected a list of test cases, got {type(data).__name__}")
    return data


def _decode_packed(value: str, field: str) -> object:
    try:
        raw = base64.b64decode(value, validate=True)
        inflater = zlib.decompressobj()
        blob = inflater.decompress(raw, MAX_TESTS_BYTES)
        if inflater.unconsumed_tail:
            raise _RowError(field, f"decompresses to more than {MAX_TESTS_BYTES} bytes")
        text = _NoGlobals(io.BytesIO(blob)).load() if blob[:1] == b"\x80" else blob.decode()
        if not isinstance(text, str):
            raise _RowError(field, "packed test cases do not hold a JSON string")
        return json.loads(text)
    except _RowError:
        raise
    except (binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise _RowError(
            field, f"neither JSON nor base64/zlib/pickle test cases ({type(exc).__name__})"
        ) from None


def _cases(raw: list, field: str, fn_name: str | None) -> list[tuple[CodeTest, str]]:
    out = []
    for k, case in enumerate(raw):
        where = f"{field}.{k}"
        if not isinstance(case, dict):
            raise _RowError(where, f"expected an object, got {type(case).__name__}")
        inp, outp = case.get("input"), case.get("output")
        if not isinstance(inp, str) or not isinstance(outp, str):
            raise _RowError(where, "'input' and 'output' must be strings")
        kind = case.get("testtype", "functional" if fn_name else "stdin")
        if kind not in ("stdin", "functional"):
            raise _RowError(f"{where}.testtype", f"expected stdin or functional, got {kind!r}")
        if kind == "functional":
            try:
                call_arguments(inp)
                json.loads(outp)
            except (json.JSONDecodeError, RecursionError):
                raise _RowError(where, "functional test input/output is not JSON") from None
        out.append((CodeTest(inp, outp), kind))
    return out


def _metadata_fn(record: dict) -> str | None:
    meta = record.get("metadata") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            raise _RowError("metadata", "not valid JSON") from None
    if not isinstance(meta, dict):
        raise _RowError("metadata", f"expected an object, got {type(meta).__name__}")
    return meta.get("func_name")


def convert_code_row(
    record: object, schema: str | None = None, test_set: str = "all"
) -> tuple[tuple, str]:
    """(messages, answer) of one row under `schema` ("lcb" or "tests"; None: "lcb" when the row
    has `question_content`); raises _RowError. `llm.data.loaders` calls it for schema "code"."""
    if not isinstance(record, dict):
        raise _RowError("<row>", f"expected an object, got {type(record).__name__}")
    if schema is None:
        schema = "lcb" if "question_content" in record else "tests"
    starter = record.get("starter_code") or ""
    if not isinstance(starter, str):
        raise _RowError("starter_code", f"expected a string, got {type(starter).__name__}")
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
                raise _RowError(key, f"expected {want}, got {value!r:.60}")
            frame[key] = value
    if not isinstance(statement, str) or not statement.strip():
        raise _RowError(sfield, "missing or empty statement")
    if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
        raise _RowError("fn_name", f"expected a Python identifier, got {fn_name!r:.60}")
    cases = []
    for f in fields:
        cases += _cases(_decode_cases(record.get(f, []), f), f, fn_name)
    if not cases:
        raise _RowError(fields[0], "no test cases")
    kinds = {kind for _, kind in cases}
    if len(kinds) > 1:
        raise _RowError(fields[0], "mixes stdin and functional test cases")
    if kinds == {"functional"} and not fn_name:
        raise _RowError("metadata", "functional tests need metadata.func_name")
    fn = fn_name if kinds == {"functional"} else None
    tests = CodeTests(tuple(c for c, _ in cases), fn, **frame)
    if tests.extract == "raw":
        return ({"role": "user", "content": statement.strip()},), encode_tests(tests)
    return code_messages(statement.strip(), starter), encode_tests(tests)


def detect_code_schema(record: object) -> str:
    """ "lcb" or "tests" for a file whose first row is `record`; DataError otherwise."""
    if isinstance(record, dict):
        if "question_content" in record:
            return "lcb"
        if "tests" in record and ("problem" in record or "question" in record):
            return "tests"
        found = sorted(record)[:12]
        raise DataError(
            f"cannot detect a code schema from fields {found}: expected question_content + "
            "public_test_cases (LiveCodeBench) or problem + tests"
        )
    raise DataError(f"cannot detect a code schema: first row is a {type(record).__name__}")


def load_code_problems(
    path: str | os.PathLike,
    *,
    on_error: str = "raise",
    limit: int | None = None,
    tests: str = "all",
) -> LoadResult:
    """Read code problems (see the module docstring) into Examples whose answer is the JSON
    test spec. `tests="public"` keeps LiveCodeBench's public tests only (faster rewards)."""
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if tests not in TEST_SETS:
        raise DataError(f"tests must be one of {TEST_SETS}, got {tests!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    source, result, schema = str(path), LoadResult([]), None
    for rec in read_records(Path(path)):
        if rec.error is not None:
            _fail(result, f"{source}: {rec.where}: {rec.error}", on_error, rec.count)
            continue
        if schema is None and isinstance(rec.value, dict):
            try:
                schema = detect_code_schema(rec.value)
            except DataError as exc:
                raise DataError(f"{source}: {rec.where}: {exc}") from None
        try:
            messages, answer = convert_code_row(rec.value, schema, tests)
        except _RowError as exc:
            _fail(result, f"{source}: {rec.where}: {exc}", on_error, rec.count)
            continue
        result.examples.append(Example(messages, answer, source, rec.row))
        if limit is not None and len(result.examples) >= limit:
            break
    if not result.examples:
        raise DataError(f"{source}: no usable examples ({result.skipped} rows skipped)")
    return result
