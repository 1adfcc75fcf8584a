"""Reward checking: tables of equivalent / non-equivalent answers, extraction, registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm.rewards.registry import (
    MAX_DIGITS,
    available_rewards,
    get_reward,
    last_boxed,
    normalize_answer,
    power_digits,
    register_reward,
    screen_answer,
)

# (completion's boxed answer, ground truth) pairs that math-verify must accept.
EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    ("0.5", r"\frac{1}{2}"),
    ("1/2", r"\frac{1}{2}"),
    (r"\dfrac12", "1/2"),
    (r"\tfrac{1}{2}", "0.5"),
    ("3.0", "3"),
    ("3", "3.0"),
    ("034", "34"),
    ("1,000", "1000"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
    ("x+1", "1+x"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\{1,2\}", r"\{2,1\}"),
    ("(1,2]", "(1,2]"),
    (r"[0, \infty)", r"[0,\infty)"),
    (r"10\%", "0.1"),
    (r"\text{(A)}", "A"),
    ("x=3", "3"),
    (r"2\pi", r"2\pi"),
    (r"\pi/2", r"\frac{\pi}{2}"),
    ("2^{10}", "1024"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    ("-3", "-3"),
    (r"\$5", "5"),
    (r"\boxed{7}", "7"),
    ("34", r"\boxed{34}"),
]

NOT_EQUIVALENT = [
    ("2", "3"),
    ("x+1", "x+2"),
    ("0.5", "0.25"),
    (r"\frac{1}{3}", "0.33"),
    ("[1,2]", "(1,2]"),
    (r"\{1,2\}", r"\{1,3\}"),
    ("-3", "3"),
    (r"\sqrt{2}", "1.41"),
    ("1000", "100"),
    ("", "3"),
]


@pytest.fixture(scope="module")
def math_reward():
    return get_reward("math", timeout_s=10.0, num_workers=2)


def boxed(ans: str) -> str:
    return f"Let me think step by step.\nSo the result is \\boxed{{{ans}}}."


def test_equivalent_answers_score_one(math_reward):
    scores = math_reward([boxed(p) for p, _ in EQUIVALENT], [g for _, g in EQUIVALENT])
    wrong = [pair for pair, s in zip(EQUIVALENT, scores) if s != 1.0]
    assert wrong == []


def test_non_equivalent_answers_score_zero(math_reward):
    scores = math_reward([boxed(p) for p, _ in NOT_EQUIVALENT], [g for _, g in NOT_EQUIVALENT])
    wrong = [pair for pair, s in zip(NOT_EQUIVALENT, scores) if s != 0.0]
    assert wrong == []


def test_extraction_rules(math_reward):
    cases = [
        ("The answer is 3.", "3", 0.0),  # no box -> 0, even when the text is right
        (r"First \boxed{2}, finally \boxed{3}", "3", 1.0),  # the LAST box counts
        (r"First \boxed{3}, finally \boxed{2}", "3", 0.0),
        (r"\boxed{3", "3", 0.0),  # unclosed
        (r"\boxed{\frac{1}{2}} is wrong; \boxed{\{1,2\}}", r"\{1,2\}", 1.0),  # nested braces
        ("x" * 50_000 + r"\boxed{42}", "42", 1.0),  # only the tail is read, and it is enough
        (r"\boxed{42}" + "x" * 50_000, "42", 0.0),  # answer beyond the tail window
        (r"\boxed{}", "3", 0.0),
    ]
    scores = math_reward([c for c, _, _ in cases], [a for _, a, _ in cases])
    assert scores == [s for _, _, s in cases]
    assert math_reward.stats.counts["no_box"] >= 2


def test_math_reward_works_off_the_main_thread(math_reward):
    # math-verify's own (signal-based) timeout fails off the main thread; ours does not use
    # signals in the calling process, so a trainer or evaluator thread may score.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        scores = ex.submit(math_reward, [boxed("0.5"), boxed("9^{9^{9^9}}")], ["1/2", "3"]).result()
    assert scores == [1.0, 0.0]


def test_math_reward_stats_and_empty_batch(math_reward):
    before = math_reward.stats.items
    assert math_reward([], []) == []
    math_reward([boxed("1"), "no box"], ["1", "1"])
    assert math_reward.stats.items == before + 2
    assert len(math_reward.stats.last_seconds) == 2 and math_reward.stats.last_seconds[1] == 0.0
    log = math_reward.stats.as_log()
    assert log["reward/ok"] >= 1 and all(k.startswith("reward/") for k in log)


def test_last_boxed():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}} c", 100) == (r"\frac{1}{2}", "ok")
    assert last_boxed("no box", 100) == (None, "no_box")
    assert last_boxed(r"\boxed{" + "1" * 20 + "}", 10) == (None, "unclosed")
    assert last_boxed(r"\boxed{" + "1" * 10 + "}", 10) == ("1" * 10, "ok")


@pytest.mark.parametrize(
    "expr, digits",
    [
        ("2^{10}", 10 * math.log10(2)),
        ("10**10**10", 1e10),
        (r"2^{2^{2^{2}}}", 16 * math.log10(2)),  # 2^16 = 65536
        (r"2^{2^{2^{2^{2}}}}", 2**16 * math.log10(2)),
        ("9^{9^{9^{9}}}", math.inf),
        ("10^{-10^{10}}", 1e10),  # a tiny number whose exact form is just as costly
        (r"\left(10\right)^{(10^{6})}", 1e6),
        ("x^{1000}", 0.0),
        (r"\frac{1}{2}", 0.0),
        ("100000!", 0.0),
        ("(10^{6})!", math.inf),
    ],
)
def test_power_digits(expr, digits):
    assert power_digits(expr) == pytest.approx(digits)


def test_screen_answer():
    assert screen_answer("2^{100000}", 1000) is None  # 30103 digits: cheap enough to check
    assert screen_answer("9^{99999999}", 1000) == "rejected_huge"
    assert screen_answer("1" * 1001, 1000) == "rejected_long"
    assert screen_answer("{" * 50 + "}" * 50, 1000) == "rejected_deep"
    assert power_digits("2^{332193}") > MAX_DIGITS > power_digits("2^{332192}")


# ----------------------------------------------------------------------------- answer_tag

ANSWER_TAG = [
    ("Reasoning...\nAnswer: 34", "34", 1.0),
    ("answer:34", "34", 1.0),
    ("Answer: $34$", "34", 1.0),
    ("Answer: 1,000", "1000", 1.0),
    (r"Answer: \boxed{12}", "12", 1.0),
    (r"Answer: \frac12", r"\frac{1}{2}", 1.0),
    ("Answer: x = 5", "5", 1.0),
    ("Answer: 5 degrees", "5", 1.0),
    ("Answer: 3\nlater text\nAnswer: 4", "4", 1.0),  # the last occurrence
    ("Answer: 4\nAnswer: 3", "4", 0.0),
    ("The answer is 34", "34", 0.0),  # no "Answer:" tag
    ("Answer: 35", "34", 0.0),
    ("x" * 5000 + "\nAnswer: 34\n" + "done\n" * 50, "34", 1.0),  # within the last 300 chars
    ("Answer: 34\n" + "x" * 400, "34", 0.0),  # ... and here it is not
]


def test_answer_tag_table():
    reward = get_reward("answer_tag")
    scores = reward([c for c, _, _ in ANSWER_TAG], [a for _, a, _ in ANSWER_TAG])
    assert scores == [s for _, _, s in ANSWER_TAG]
    assert reward.stats.counts["no_answer"] == 2  # no tag at all; tag outside the window


def test_normalize_answer():
    assert normalize_answer(r"\text{(B)}") == "(B)"
    assert normalize_answer(r"$\sqrt3$") == r"\sqrt{3}"
    assert normalize_answer(" 12 ") == "12"


# ----------------------------------------------------------------------------- registry


def test_registry_and_options():
    assert {"math", "answer_tag", "tiny_task"} <= set(available_rewards())
    with pytest.raises(KeyError, match="unknown reward 'nope'; available: ") as err:
        get_reward("nope")
    assert isinstance(err.value, ValueError) and str(err.value).startswith("unknown reward")
    with pytest.raises(TypeError, match="does not take option"):
        get_reward("math", timeout=3)
    with pytest.raises(ValueError, match="timeout_s must be a positive number"):
        get_reward("math", timeout_s=0)
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        get_reward("math", num_workers=0)
    with pytest.raises(ValueError, match="max_answer_chars must be a non-negative integer"):
        get_reward("math", max_answer_chars=1.5)
    # timeout_s is accepted by every reward, dropped where the function does not take it
    assert get_reward("tiny_task", timeout_s=2.0)(["7"], ["7"]) == [1.0]


def test_register_and_sanitise_custom_reward():
    @register_reward("test_weird")
    def weird(completions, answers):
        return [math.nan, 2.0, -1.0, "x", 0.25][: len(completions)]

    reward = get_reward("test_weird")
    assert reward(["a"] * 5, ["b"] * 5) == [0.0, 1.0, 0.0, 0.0, 0.25]
    assert reward.stats.counts == {"nonfinite": 2, "out_of_range": 2}
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_weird")(lambda c, a: [])
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        reward(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="item 0: completion and answer must be str"):
        reward([None], ["c"])


# ----------------------------------------------------------------------------- properties

_PIECES = st.sampled_from(
    ["\\boxed{", "{", "}", "^", "**", "!", "(", ")", "-", "9", "10", "x", " "]
)
_TEXT = st.lists(_PIECES, max_size=40).map("".join)


def naive_last_boxed(text: str, max_chars: int):
    """Reference: quadratic re-count of the braces after the last "\\boxed{"."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None, "no_box"
    begin = start + len("\\boxed{")
    for j in range(begin, len(text)):
        seg = text[begin : j + 1]
        if seg.count("}") - seg.count("{") == 1:
            return (text[begin:j], "ok") if j - begin <= max_chars else (None, "unclosed")
    return None, "unclosed"


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, max_chars=st.integers(0, 40))
def test_last_boxed_matches_naive(text, max_chars):
    assert last_boxed(text, max_chars) == naive_last_boxed(text, max_chars)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_guards_and_normaliser_never_raise(text):
    digits = power_digits(text)
    assert digits >= 0.0 and not math.isnan(digits)
    assert screen_answer(text, 1000) in (None, "rejected_deep", "rejected_huge")
    assert isinstance(normalize_answer(text), str)
