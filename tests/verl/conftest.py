"""tests/verl/ runs in verl's own virtual environment (``.ci/verl_env.sh`` builds ``.venv-verl``,
``.ci/run`` runs these tests in it). Elsewhere verl is not installed and the folder is not
collected; where ``TICGRPO_VERL_ENV`` is set (the verl run) a missing verl is an error."""

import importlib.util
import os

if importlib.util.find_spec("verl") is None:
    if os.environ.get("TICGRPO_VERL_ENV"):
        raise ImportError("TICGRPO_VERL_ENV is set but verl is not importable in this environment")
    collect_ignore_glob = ["test_*.py"]
