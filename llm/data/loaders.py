"""Maths problems from local parquet / jsonl / json files, as chat prompts with a ground truth.

Schemas (`load_examples(schema=...)`):

- "dapo" — DAPO-Math-17K rows: `prompt` is a list of `{role, content}` chat messages and the
  ground truth is `reward_model.ground_truth` (`data_source`, `ability`, `extra_info` are
  ignored). The prompt is kept exactly as given: its own instruction asks for a last line
  "Answer: $Answer", which the "answer_tag" reward checks (the "math" reward wants `\\boxed{}`).
- "plain" — `{problem, answer}`; AIME-style files with `Problem` / `Answer` (integer answers,
  extra `ID` / `Year` columns) and `question` are accepted too. The user message is the problem
  followed by `instruction` (default `BOXED_INSTRUCTION`, asking for a boxed final answer).
- "fields" — `field_map={"problem": PATH, "answer": PATH}` (or `"prompt": PATH` for a chat
  list), where PATH is a key or a dotted path into nested fields (`"reward_model.ground_truth"`,
  `"prompt.0.content"`).
- "code" — code problems for the "code" reward: LiveCodeBench rows or `{problem, tests}` rows
  (`llm.data.code`); the answer is the problem's JSON test spec and the prompt is built from
  the row (LiveCodeBench's prompt), so `instruction` does not apply.
- "auto" — "fields" when `field_map` is given, else "dapo" when the first row has `prompt` and
  `reward_model`, else "code" when it has `question_content`, or `tests` and a problem, else
  "plain" when it has a problem and an answer.

Bad data is found before training: with `on_error="raise"` the first bad row raises `DataError`
naming the file, the row (0-based; the jsonl line number too) and the field; with
`on_error="skip"` bad rows are dropped and counted in `LoadResult.skipped` with one message per
row in `LoadResult.problems`. A file that cannot be read at all (missing, truncated parquet
footer, invalid .json) or that yields no example raises in both modes.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from llm.data.code import CodeRowError, convert_code_row
from llm.data.readers import DataError, read_records

#: Appended to plain problems: the "math" reward reads the last \boxed{} of the completion.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
SCHEMAS = ("auto", "dapo", "plain", "fields", "code")
ROLES = ("system", "user", "assistant")
_PROBLEM_KEYS = ("problem", "Problem", "question", "Question")
_ANSWER_KEYS = ("answer", "Answer")


@dataclass(frozen=True)
class Example:
    """One problem: chat `messages` (with the answer-format instruction), ground-truth `answer`,
    `source` file path and 0-based `row` in it."""

    messages: tuple[dict[str, str], ...]
    answer: str
    source: str
    row: int


@dataclass
class LoadResult:
    """Loaded `examples`; `skipped` rows and one `problems` message per skipped row."""

    examples: list[Example]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


class _RowError(Exception):
    """A problem with one field of one row (message completed with file and row by the caller)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"field {field_name!r}: {message}")


_MISSING = object()


def get_path(record: object, path: str) -> object:
    """`record["a"]["b"]` for path "a.b"; list items by index ("prompt.0.content"); else _MISSING."""
    node = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _unicode(text: str, field_name: str) -> str:
    """``text`` unchanged when it is valid Unicode; a lone UTF-16 surrogate (JSON allows
    ``"\\ud800"``) cannot be encoded, so no tokenizer can take it: a row error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _RowError(
            field_name, f"contains a lone UTF-16 surrogate at character {exc.start} (not text)"
        ) from None
    return text


def answer_text(value: object, field_name: str) -> str:
    """The ground truth as a string: str (stripped, non-empty), int, or finite float.

    Integer-valued floats print as integers (AIME answers read back as 34.0 -> "34").
    """
    if value is _MISSING:
        raise _RowError(field_name, "missing")
    if value is None:
        raise _RowError(field_name, "is null")
    if isinstance(value, bool):
        raise _RowError(field_name, f"expected a string or number, got bool ({value})")
    if isinstance(value, str):
        if not value.strip():
            raise _RowError(field_name, "empty answer")
        return _unicode(value.strip(), field_name)
    if isinstance(value, numbers.Integral):
        try:
            return str(int(value))
        except ValueError:  # Python's int -> str limit: more than 4300 digits
            raise _RowError(field_name, "integer answer has more than 4300 digits") from None
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            raise _RowError(field_name, f"answer is not finite ({x})")
        return str(int(x)) if x.is_integer() else repr(x)
    raise _RowError(field_name, f"expected a string or number, got {type(value).__name__}")


def problem_text(value: object, field_name: str) -> str:
    if value is _MISSING:
        raise _RowError(field_name, "missing")
    if not isinstance(value, str):
        raise _RowError(field_name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _RowError(field_name, "empty prompt")
    return _unicode(value.strip(), field_name)


def chat_messages(value: object, field_name: str) -> tuple[dict[str, str], ...]:
    """A chat prompt: non-empty list of {role, content} with a non-empty user message."""
    if value is _MISSING:
        raise _RowError(field_name, "missing")
    if not isinstance(value, list | tuple) or not value:
        raise _RowError(
            field_name, f"expected a non-empty list of chat messages, got {value!r:.80}"
        )
    messages = []
    for k, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _RowError(f"{field_name}.{k}", f"expected a dict, got {type(msg).__name__}")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise _RowError(f"{field_name}.{k}.role", f"expected one of {ROLES}, got {role!r:.40}")
        if not isinstance(content, str):
            raise _RowError(f"{field_name}.{k}.content", f"expected a string, got {content!r:.40}")
        messages.append({"role": role, "content": _unicode(content, f"{field_name}.{k}.content")})
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise _RowError(field_name, "empty prompt (no user message with content)")
    return tuple(messages)


def _user_prompt(problem: str, instruction: str | None) -> tuple[dict[str, str], ...]:
    content = f"{problem}\n{instruction}" if instruction else problem
    return ({"role": "user", "content": content},)


def _first_key(record: dict, keys: tuple[str, ...]) -> str:
    return next((k for k in keys if k in record), keys[0])


def _convert(record: object, schema: str | None, field_map: dict, instruction: str | None):
    """(messages, answer) of one record under `schema`; raises _RowError."""
    if not isinstance(record, dict):
        raise _RowError("<row>", f"expected an object, got {type(record).__name__}")
    if schema == "code":
        try:
            return convert_code_row(record)
        except CodeRowError as exc:
            raise _RowError(exc.field_name, exc.message) from None
    if schema == "dapo":
        messages = chat_messages(get_path(record, "prompt"), "prompt")
        path = "reward_model.ground_truth"
        return messages, answer_text(get_path(record, path), path)
    if schema == "plain":
        pkey, akey = _first_key(record, _PROBLEM_KEYS), _first_key(record, _ANSWER_KEYS)
        problem = problem_text(record.get(pkey, _MISSING), pkey)
        return _user_prompt(problem, instruction), answer_text(record.get(akey, _MISSING), akey)
    if "prompt" in field_map:
        messages = chat_messages(get_path(record, field_map["prompt"]), field_map["prompt"])
    else:
        path = field_map["problem"]
        messages = _user_prompt(problem_text(get_path(record, path), path), instruction)
    path = field_map["answer"]
    return messages, answer_text(get_path(record, path), path)


def detect_schema(record: object, field_map: dict | None) -> str:
    """The schema "auto" resolves to for a file whose first row is `record`."""
    if field_map:
        return "fields"
    if isinstance(record, dict):
        if "prompt" in record and "reward_model" in record:
            return "dapo"
        if "question_content" in record or (
            "tests" in record and any(k in record for k in _PROBLEM_KEYS)
        ):
            return "code"
        if any(k in record for k in _PROBLEM_KEYS) and any(k in record for k in _ANSWER_KEYS):
            return "plain"
        found = sorted(record)[:12]
        raise DataError(
            f"cannot detect the schema from fields {found}: expected prompt + reward_model "
            "(dapo) or problem + answer (plain); pass schema= or field_map={'problem': ..., "
            "'answer': ...}"
        )
    raise DataError(f"cannot detect the schema: first row is a {type(record).__name__}")


def _check_field_map(field_map: dict | None, schema: str) -> dict:
    if schema != "fields" and not field_map:
        return {}
    if (
        not isinstance(field_map, dict)
        or "answer" not in field_map
        or not (("problem" in field_map) ^ ("prompt" in field_map))
    ):
        raise DataError(
            "field_map must be a dict with 'answer' and exactly one of 'problem' (text) or "
            f"'prompt' (chat messages), e.g. {{'problem': 'question', 'answer': 'label.value'}}; "
            f"got {field_map!r}"
        )
    bad = sorted(k for k in field_map if k not in ("problem", "prompt", "answer"))
    if bad or not all(isinstance(v, str) and v for v in field_map.values()):
        raise DataError(f"field_map: unknown keys {bad} or empty paths in {field_map!r}")
    return field_map


def load_examples(
    path: str | os.PathLike,
    *,
    schema: str = "auto",
    field_map: dict[str, str] | None = None,
    on_error: str = "raise",
    limit: int | None = None,
    instruction: str | None = BOXED_INSTRUCTION,
) -> LoadResult:
    """Read `path` (.parquet, .jsonl, .json list) into Examples (see the module docstring).

    `limit` keeps the first `limit` usable examples. Raises DataError for a bad file, a bad row
    under on_error="raise", or when no usable example remains.
    """
    if schema not in SCHEMAS:
        raise DataError(f"unknown schema {schema!r}; choose one of {SCHEMAS}")
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    fmap = _check_field_map(field_map, schema)
    source = str(path)
    result = LoadResult([])
    resolved = None if schema == "auto" else schema
    for rec in read_records(Path(path)):
        if rec.error is not None:
            _fail(result, f"{source}: {rec.where}: {rec.error}", on_error, rec.count)
            continue
        if resolved is None and isinstance(rec.value, dict):
            try:
                resolved = detect_schema(rec.value, fmap)
            except DataError as exc:  # a file-level problem: no row of it can be read
                raise DataError(f"{source}: {rec.where}: {exc}") from None
        try:
            messages, answer = _convert(rec.value, resolved, fmap, instruction)
        except _RowError as exc:
            _fail(result, f"{source}: {rec.where}: {exc}", on_error, rec.count)
            continue
        result.examples.append(Example(messages, answer, source, rec.row))
        if limit is not None and len(result.examples) >= limit:
            break
    if not result.examples:
        raise DataError(f"{source}: no usable examples ({result.skipped} rows skipped)")
    return result


def _fail(result: LoadResult, message: str, on_error: str, count: int) -> None:
    if on_error == "raise":
        raise DataError(message)
    result.skipped += count
    result.problems.append(message)


# ----------------------------------------------------------------------------- prompts


def render_prompt(example: Example, tokenizer, *, chat_template: bool = True) -> str:
    """The prompt text for generation.

    The tokenizer's chat template with `add_generation_prompt=True` when `chat_template` and the
    tokenizer has one; else "Role: content" lines followed by "Assistant:".
    """
    messages = [dict(m) for m in example.messages]
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def prompt_token_count(text: str, tokenizer) -> int:
    """Tokens of a rendered prompt as the rollout encodes it (special tokens unless it starts
    with the BOS text, as a chat-templated prompt does)."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return len(tokenizer(text, add_special_tokens=add)["input_ids"])


def check_prompt_lengths(
    examples: list[Example],
    tokenizer,
    max_prompt_tokens: int | None,
    *,
    on_error: str = "raise",
    chat_template: bool = True,
) -> LoadResult:
    """Keep the examples whose prompt renders and tokenizes, with at most `max_prompt_tokens`
    tokens (None: any length; the prompts are still rendered and tokenized, so what the
    rollout will see is checked before training starts).

    on_error="raise": DataError naming file, row and the token counts (or the tokenizer's
    complaint) for the first bad prompt; "skip": drop and count them.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise DataError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
    result = LoadResult([])
    for ex in examples:
        try:
            text = render_prompt(ex, tokenizer, chat_template=chat_template)
            n = prompt_token_count(text, tokenizer)
        except Exception as exc:  # noqa: BLE001 - any tokenizer/template failure names the row
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            _fail(result, f"{ex.source}: row {ex.row}: field 'prompt': the tokenizer cannot "
                          f"take the rendered prompt ({reason})", on_error, 1)  # fmt: skip
            continue
        if max_prompt_tokens is None or n <= max_prompt_tokens:
            result.examples.append(ex)
            continue
        message = (
            f"{ex.source}: row {ex.row}: field 'prompt': rendered prompt has {n} tokens > "
            f"max_prompt_tokens={max_prompt_tokens}; raise the budget or skip such rows"
        )
        _fail(result, message, on_error, 1)
    return result
