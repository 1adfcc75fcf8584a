"""The `ticgrpo` console script: one sub-command per entry point.

Each sub-command lives in the part of the project that owns it and is imported only when it is
called, so `import ticgrpo` stays torch-only (no transformers, no matplotlib).

| command     | module              | what it does                                                   |
|-------------|---------------------|----------------------------------------------------------------|
| `reproduce` | `toy.reproduce`     | the theory lab: every claim of the paper as a measured number   |
| `train`     | `llm.train`         | GRPO-family training of a causal LM (tiny preset runs on CPU)   |
| `eval`      | `llm.evaluate`      | accuracy averaged over k samples and unbiased pass@k            |
| `plot`      | `analysis.llm_plots`| curves from one or more run folders' `metrics.jsonl`            |
| `study`     | `llm.study`         | every arm of the paper's comparison, summary table, plots       |
| `data`      | `llm.data.paper_data`| the paper preset's training / evaluation files (DAPO schema)   |
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("toy.reproduce", "run the theory lab and write figures, REPORT.md, summary.json"),
    "train": ("llm.train", "train a causal LM with a GRPO-family method"),
    "eval": ("llm.evaluate", "evaluate a model on a file or a benchmark suite (avg@k, pass@k)"),
    "plot": ("analysis.llm_plots", "plot reward/accuracy/length/clip/ratio curves of runs"),
    "study": ("llm.study", "run every arm of the paper's comparison; summary table and plots"),
    "data": ("llm.data.paper_data", "write the paper preset's data files from local copies"),
}


def _usage() -> str:
    lines = ["usage: ticgrpo COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `ticgrpo COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ticgrpo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside a handler of the command's own (train saves)
        print(f"ticgrpo {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
