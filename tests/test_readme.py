"""The README's two set-up commands are the ones CI and users run, in a fresh environment."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def ci_lines() -> list[str]:
    """.ci/run's commands: non-empty lines that are not comments."""
    lines = (line.strip() for line in CI.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_has_exactly_two_setup_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert "ticgrpo reproduce" in cmds[0] and "pytest" in cmds[1]
    assert all("[cpu" in c for c in cmds), "set-up must pin the CPU torch wheel"


def test_readme_test_command_installs_what_the_tests_need():
    extras = re.search(r'"\.\[([a-z,]+)\]"', readme_commands()[1]).group(1).split(",")
    # llm: the trainer's tests (and tensorboard); trl: tests/test_integration_trl.py, which
    # must run in CI rather than skip; test: pytest and hypothesis.
    assert {"cpu", "llm", "trl", "test"} <= set(extras), extras


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    lines = ci_lines()
    cmd = readme_commands()[1]
    assert cmd in lines, f".ci/run must run the README's test command verbatim: {cmd}"
    before = lines[: lines.index(cmd)]
    venvs = [shlex.split(line) for line in before if " -m venv " in line]
    assert venvs, ".ci/run must create a virtual environment before the test command"
    venv_dir = venvs[-1][-1]
    assert "--system-site-packages" not in CI.read_text(), (
        "the venv must not see the machine's packages"
    )
    assert f"rm -rf {venv_dir}" in before, "the venv must be fresh, not left from an earlier run"
    assert f". {venv_dir}/bin/activate" in before, "the test command must run inside the venv"
    assert f"/{venv_dir}/" in (ROOT / ".gitignore").read_text()


def test_ci_runs_the_verl_tests_in_verls_own_env():
    lines = ci_lines()
    build = [line for line in lines if line.startswith("bash .ci/verl_env.sh")]
    assert len(build) == 1, lines
    venv_dir = shlex.split(build[0])[-1]
    run = [line for line in lines if "pytest tests/verl" in line]
    assert run == [f"TICGRPO_VERL_ENV=1 {venv_dir}/bin/python -m pytest tests/verl"], run
    assert lines.index(build[0]) < lines.index(run[0])
    assert f"/{venv_dir}/" in (ROOT / ".gitignore").read_text()


def test_cpu_torch_pinned_alike_everywhere():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cpu = ["torch==2.13.0"]' in pyproject
    assert "TORCH_VERSION=2.13.0" in (ROOT / ".ci" / "verl_env.sh").read_text()
