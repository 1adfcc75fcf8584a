"""The "code" reward: registry, options and refusals, rewards and per-status counts."""

from __future__ import annotations

import json
import shutil

import pytest

from llm.config.train_config import ConfigError
from llm.rewards.registry import available_rewards, get_reward
from llm.sandbox.judge import CodeTest, CodeTests, encode_tests

ADD = encode_tests(CodeTests((CodeTest("1 2\n", "3"), CodeTest("10 5\n", "15"))))
CALL = encode_tests(CodeTests((CodeTest("1\n2", "3"), CodeTest("4\n4", "8")), "add"))
HAVE_BWRAP = shutil.which("bwrap") is not None


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\nDone."


@pytest.fixture(scope="module")
def options():
    """The real sandbox where bwrap is installed; else the explicit opt-in (what is tested here
    is the reward around the sandbox)."""
    if HAVE_BWRAP:
        return {}
    return {"sandbox": "unsandboxed", "allow_unsandboxed": True}


def test_registered():
    assert "code" in available_rewards()


def test_rewards_and_statuses(options):
    reward = get_reward("code", timeout_s=1.5, memory_mb=256, **options)
    completions = [
        fence("a, b = map(int, input().split())\nprint(a + b)"),
        fence("a, b = map(int, input().split())\nprint(a * b)"),
        fence("print(1 / 0)"),
        fence("while True:\n    pass"),
        fence("x = bytearray(10 ** 10)"),
        "I think the answer is 3.",
        fence("class Solution:\n    def add(self, a, b):\n        return a + b"),
        fence("def add(a, b):\n    return a + 1"),
    ]
    answers = [ADD] * 6 + [CALL] * 2
    scores = reward(completions, answers)
    assert scores == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert dict(reward.stats.counts) == {
        "passed": 2,
        "wrong_answer": 2,
        "runtime_error": 1,
        "timeout": 1,
        "memory": 1,
        "no_code": 1,
    }
    log = reward.stats.as_log("reward_check/")
    assert log["reward_check/passed"] == 2.0 and log["reward_check/timeout"] == 1.0
    seconds = reward.stats.last_seconds
    assert len(seconds) == 8 and seconds[5] == 0.0 and 1.5 <= seconds[3] < 4.0  # no code; the stall


def test_partial_credit(options):
    reward = get_reward("code", partial=True, timeout_s=1.5, **options)
    half = fence("a, b = map(int, input().split())\nprint(3 if a == 1 else 0)")
    assert reward([half, fence("print(0)")], [ADD, ADD]) == [0.5, 0.0]


def test_refuses_unsandboxed_without_opt_in():
    with pytest.raises(ConfigError, match="reward 'code': refusing .* allow_unsandboxed=True"):
        get_reward("code", sandbox="unsandboxed")
    with pytest.raises(ValueError, match="sandbox must be one of"):
        get_reward("code", sandbox="docker")
    with pytest.raises(ValueError, match="partial must be true or false"):
        get_reward("code", partial="yes", sandbox="unsandboxed", allow_unsandboxed=True)
    with pytest.raises(ValueError, match="timeout_s must be a positive number"):
        get_reward("code", timeout_s=0)


def test_missing_bwrap_fails_when_built(monkeypatch):
    import llm.rewards.code as code
    import llm.sandbox.runner as runner

    monkeypatch.setattr(code, "_POOLS", {})
    monkeypatch.setattr(runner, "_CHECKED", {})
    monkeypatch.setattr(shutil, "which", lambda n: None if n == "bwrap" else "/usr/bin/" + n)
    with pytest.raises(ConfigError, match="apt-get install bubblewrap"):
        get_reward("code")


def test_non_code_answers_are_an_error(options):
    reward = get_reward("code", **options)
    with pytest.raises(ValueError, match="item 1: code tests: answer is not JSON"):
        reward([fence("print(3)")] * 2, [ADD, "forty-two"])
    with pytest.raises(ValueError, match="item 0: code tests: expected an object"):
        reward([fence("print(3)")], [json.dumps([1])])


def test_trainer_stops_cleanly_without_the_sandbox(tmp_path, monkeypatch, capsys):
    """No bubblewrap (here: a PATH without it): `ticgrpo train` prints why and exits 2 before
    loading the model."""
    import llm.rewards.code as code
    import llm.sandbox.backend as backend
    import llm.sandbox.runner as runner
    from llm.data.code_tasks import write_tiny_code_task
    from llm.train import main

    monkeypatch.setattr(code, "_POOLS", {})
    monkeypatch.setattr(runner, "_CHECKED", {})
    monkeypatch.setattr(
        backend.shutil, "which", lambda name: None if name == "bwrap" else "/usr/bin/" + name
    )
    data = write_tiny_code_task(tmp_path / "code.jsonl", 16, seed=0)
    argv = ["--preset", "tiny", "--set", f"train_data={data}", "--set", "reward=code"]
    argv += ["--set", "eval_data=", "--set", "instruction=none", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reward 'code'" in err and "apt-get install bubblewrap" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
