"""ticgrpo/ imports torch only: it must import with transformers (and matplotlib) unavailable."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'transformers', 'matplotlib', 'scipy', 'numpy_financial', 'yaml', 'toy', 'llm'}:
            raise ImportError(f'blocked: {name}')
sys.meta_path.insert(0, Block())
"""


def test_core_imports_with_transformers_unavailable():
    code = BLOCK + (
        "import pkgutil, importlib, ticgrpo\n"
        "mods = [m.name for m in pkgutil.iter_modules(ticgrpo.__path__) if m.name not in ('cli', '__main__')]\n"
        "for m in mods: importlib.import_module('ticgrpo.' + m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in {'transformers','matplotlib','scipy'})\n"
        "assert not bad, bad\n"
        "print('ok', len(mods))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_cli_help_lists_every_command_without_importing_them():
    code = BLOCK + "from ticgrpo.cli import main; raise SystemExit(main(['--help']))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for name in ("reproduce", "train", "eval", "plot"):
        assert name in out.stdout
