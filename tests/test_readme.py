"""The README's two set-up commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert "ticgrpo reproduce" in cmds[0] and "pytest" in cmds[1]
    assert all("[cpu" in c for c in cmds), "set-up must pin the CPU torch wheel"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == readme_commands()[1]


def test_cpu_extra_pins_torch():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cpu = ["torch==2.13.0"]' in pyproject
