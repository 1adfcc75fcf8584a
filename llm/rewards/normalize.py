"""Minerva-style normalisation of short final answers, for the "answer_tag" reward.

Private helper of `llm.rewards.registry`. The tables are those of Lewkowycz et al. 2022 ("Solving
Quantitative Reasoning Problems with Language Models", appendix D), which DAPO's checker for
DAPO-Math-17K also uses: answers are compared as strings after this normalisation.
"""

from __future__ import annotations

import re

# Minerva normalisation tables (Lewkowycz et al. 2022, appendix D), as used by DAPO's checker.
_SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
    ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
_REMOVED = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots",
    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds",
    "meters", "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}",
    "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)  # fmt: skip


def normalize_answer(text: str) -> str:
    """Minerva-style canonical form of a short final answer (compare with `==`).

    Keeps the right-hand side of the last `=`, drops spaces, `$`, units and filler words,
    unwraps `\\text{}`, `\\textbf{}`, `\\overline{}`, `\\boxed{}`, expands `\\fracab` ->
    `\\frac{a}{b}` and `\\sqrta` -> `\\sqrt{a}`, and removes thousands separators from integers.
    """
    text = text.split("=")[-1]
    for old, new in _SUBSTITUTIONS:
        text = text.replace(old, new)
    for word in _REMOVED:
        text = text.replace(word, "")
    text = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", text)
    for command in ("text", "textbf", "overline"):
        text = re.sub(rf"\\{command}\{{(.*?)\}}", r"\1", text)
    text = re.sub(r"\\boxed\{(.*)\}", r"\1", text)
    text = re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", text)
    text = re.sub(r"(sqrt)([^{])", r"sqrt{\2}", text)
    text = text.replace("$", "")
    if text.replace(",", "").isdigit():
        text = text.replace(",", "")
    return text.strip()
