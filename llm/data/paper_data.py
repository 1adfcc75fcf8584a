"""The paper preset's data files, written from local copies of the public sets (v5 appendix C.1).

    ticgrpo data paper --dapo DAPO.parquet --aime AIME.parquet [--years 1983-2022] --out FILE
    ticgrpo data convert IN.parquet OUT.jsonl [--years 2024-2024]

``paper`` writes one training file in the DAPO-Math-17K schema (``prompt`` = chat messages,
``reward_model.ground_truth``): DAPO-Math-17K with duplicate prompts removed (the published
parquet repeats each prompt many times; v5 trains one epoch, "each prompt used exactly once")
followed by the AIME problems of the chosen years, wrapped in DAPO's own prompt template so that
one reward, ``answer_tag`` (DAPO's "Answer: X" check), scores every row. ``convert`` writes any
problem file the loaders read (plain ``problem``/``answer`` rows, AIME's ``Problem``/``Answer``
with ``Year``, or DAPO rows) in that schema, e.g. AIME24 for the trainer's evaluation.

Nothing is downloaded. Errors name the file, the row and the field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llm.data.loaders import load_examples
from llm.data.readers import DataError, read_records, write_jsonl

#: DAPO-Math-17K's prompt: the problem between this prefix and suffix (one user message).
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
    "\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
_YEAR_KEYS = ("Year", "year")


def dapo_prompt(problem: str) -> str:
    """The user message DAPO-Math-17K gives ``problem``."""
    return f"{DAPO_PREFIX}{problem.strip()}{DAPO_SUFFIX}"


def dapo_row(prompt: str, answer: str, source: str, index: int) -> dict:
    """One row of the DAPO-Math-17K schema."""
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": prompt}],
        "ability": "MATH",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"index": index},
    }


def _years(path: Path) -> list[int | None]:
    """Each row's year (``Year``/``year``), None where the file has no such field."""
    out: list[int | None] = []
    for rec in read_records(path):
        value = None
        if isinstance(rec.value, dict):
            value = next((rec.value[k] for k in _YEAR_KEYS if k in rec.value), None)
        if value is not None:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}: {rec.where}: field 'Year': not a year ({value!r})"
                ) from None
        out.extend([value] * rec.count)
    return out


def problem_rows(
    path: str | os.PathLike, *, years: tuple[int, int] | None, source: str
) -> list[dict]:
    """DAPO-schema rows of a problem file; with ``years``, only rows whose ``Year`` is in the
    closed range (a file without years is then an error naming the field)."""
    path = Path(path)
    examples = load_examples(path, instruction=None).examples  # raises DataError per bad row
    if years is not None:
        by_row = _years(path)
        kept = []
        for ex in examples:
            year = by_row[ex.row] if ex.row < len(by_row) else None
            if year is None:
                raise DataError(
                    f"{path}: row {ex.row}: field 'Year': missing, so --years {years[0]}-"
                    f"{years[1]} cannot select it"
                )
            if years[0] <= year <= years[1]:
                kept.append(ex)
        examples = kept
        if not examples:
            raise DataError(f"{path}: no row with Year in {years[0]}-{years[1]}")
    rows = []
    for i, ex in enumerate(examples):
        users = [m["content"] for m in ex.messages if m["role"] == "user"]
        content = users[-1]
        if "Answer:" not in content:  # a plain problem: give it DAPO's answer format
            content = dapo_prompt(content)
        rows.append(dapo_row(content, ex.answer, source, i))
    return rows


def dedup(rows: list[dict]) -> list[dict]:
    """Rows with a repeated prompt text dropped (first occurrence kept, order preserved)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def paper_train_rows(dapo: str | os.PathLike, aime: str | os.PathLike, years=(1983, 2022)):
    """(rows, counts): deduplicated DAPO-Math-17K, then AIME of ``years``, in DAPO's schema."""
    raw = problem_rows(dapo, years=None, source="DAPO-Math-17K")
    unique = dedup(raw)
    extra = dedup(problem_rows(aime, years=years, source=f"AIME {years[0]}-{years[1]}"))
    rows = dedup(unique + extra)
    counts = {"dapo_rows": len(raw), "dapo_unique": len(unique), "aime": len(extra),
              "total": len(rows)}  # fmt: skip
    return rows, counts


def _parse_years(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = text.split("-")
    if len(parts) != 2 or not all(x.strip().isdigit() for x in parts):
        raise argparse.ArgumentTypeError(
            f"--years expects FIRST-LAST, e.g. 1983-2022; got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticgrpo data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    paper = sub.add_parser("paper", help="the paper preset's training file")
    paper.add_argument("--dapo", required=True, help="DAPO-Math-17K (.parquet/.jsonl)")
    paper.add_argument("--aime", required=True, help="AIME problems with a Year field")
    paper.add_argument("--years", default="1983-2022", type=_parse_years)
    paper.add_argument("--out", default="data/paper_train.jsonl")
    conv = sub.add_parser("convert", help="any problem file -> DAPO schema (jsonl)")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--years", type=_parse_years, help="keep rows with Year in FIRST-LAST")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "paper":
            rows, counts = paper_train_rows(args.dapo, args.aime, args.years)
            out = write_jsonl(rows, args.out)
            print(f"wrote {out}: {counts}")
        else:
            rows = problem_rows(args.input, years=args.years, source=Path(args.input).stem)
            out = write_jsonl(rows, args.output)
            print(f"wrote {out}: {len(rows)} rows")
    except (DataError, OSError) as e:
        print(f"ticgrpo data: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
