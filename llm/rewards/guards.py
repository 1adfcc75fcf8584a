"""Cheap in-process guards run on model text before it reaches a math-verify worker.

Private helper of `llm.rewards.registry`: each function is linear in its (already truncated)
input, so the parent process never spends long on a completion, and inputs that would only burn a
worker's whole time limit (towers of exponents, giant factorials, deep nesting) score 0 at once.
"""

from __future__ import annotations

import math
import re

#: Boxed answers nested deeper than this are rejected (no competition answer needs it).
MAX_BRACE_DEPTH = 40
#: Integer powers/factorials with more decimal digits than this are rejected before parsing.
MAX_DIGITS = 100_000
#: Largest literal n accepted in n! (100000! takes ~0.3 s in sympy; 10^6! takes minutes).
MAX_FACTORIAL = 100_000


def last_boxed(text: str, max_chars: int) -> tuple[str | None, str]:
    """Content of the last `\\boxed{...}` in `text` and a status.

    Returns (content, "ok"), (None, "no_box"), or (None, "unclosed") when the last box does not
    close within `max_chars` characters. Linear in `max_chars`; earlier boxes are ignored (the
    final answer is the last one; math-verify would otherwise join all boxes into a set).
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None, "no_box"
    begin = start + len("\\boxed{")
    depth = 1
    for j in range(begin, min(len(text), begin + max_chars + 1)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[begin:j], "ok"
    return None, "unclosed"


def brace_depth(text: str) -> int:
    """Maximum `{` nesting depth of `text` (unbalanced closers are ignored)."""
    depth = best = 0
    for c in text:
        if c == "{":
            depth += 1
            best = max(best, depth)
        elif c == "}":
            depth = max(0, depth - 1)
    return best


# A sign is kept on groups and exponents: 10^{-10^{10}} costs as much as 10^{10^{10}}.
_GROUP = re.compile(r"[{(]\s*(-?(?:@\d+@|\d+))\s*[})]")
_POW = re.compile(
    r"(?<![\d.@])(@\d+@|\d+(?:\.\d+)?)\s*(?:\^|\*\*)\s*-?(@\d+@|\d+)(?!\s*(?:\^|\*\*)|[\d@])"
)
_FACT = re.compile(r"(@\d+@|\d+)\s*!")


def _log10(token: str, mags: list[float]) -> float:
    """log10 of a literal (`"123"`, `"1.5"`) or of a placeholder `@k@` for an evaluated power."""
    if token.startswith("@"):
        return mags[int(token[1:-1])]
    digits = token.split(".")[0].lstrip("0")
    if len(digits) > 300:
        return float(len(digits))
    value = float(token)
    return math.log10(value) if value > 0 else -math.inf


def power_digits(expr: str) -> float:
    """Estimated decimal digits of the largest integer power tower / factorial in `expr`.

    Right-associative towers of literals (`9^{9^{9^9}}`, `10**10**10`, `2^{2^{2^2}}`) are reduced
    innermost first, each `a^b` replaced by a placeholder carrying log10(a^b) = b·log10(a);
    `n!` with n > MAX_FACTORIAL counts as infinite. Anything symbolic is ignored. A heuristic that over-estimates
    (`\\frac{9}{2}^{3}` reads as 2^3), run on at most `max_answer_chars` characters.
    """
    text = re.sub(r"\\left|\\right|\\,|\\!|\s", "", expr)
    mags: list[float] = []

    def reduce_power(m: re.Match) -> str:
        log_exp = _log10(m.group(2), mags)
        exponent = 10.0**log_exp if log_exp < 300 else math.inf
        log_base = _log10(m.group(1), mags)
        mags.append(0.0 if log_base <= 0 else exponent * log_base)
        return f"@{len(mags) - 1}@"

    for _ in range(len(text)):
        reduced = _POW.sub(reduce_power, _GROUP.sub(r"\1", text))
        if reduced == text:
            break
        text = reduced
    digits = max(mags, default=0.0)
    for m in _FACT.finditer(text):
        log_n = _log10(m.group(1), mags)
        n = 10.0**log_n if log_n < 300 else math.inf
        digits = max(digits, math.inf if n > MAX_FACTORIAL else 0.0)
    return digits


def screen_answer(content: str, max_answer_chars: int) -> str | None:
    """Why a boxed answer is refused before parsing (a status), or None when it may be parsed."""
    if len(content) > max_answer_chars:
        return "rejected_long"
    if brace_depth(content) > MAX_BRACE_DEPTH:
        return "rejected_deep"
    if power_digits(content) > MAX_DIGITS:
        return "rejected_huge"
    return None
