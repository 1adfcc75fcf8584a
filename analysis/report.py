"""The verdict table: ``summary.json`` (machine-readable) and ``REPORT.md`` (one row per claim).

Schema of ``summary.json``::

    {"claims": [{"id", "source", "claim", "expected", "measured", "ci", "holds", "experiment",
                 "detail"}],
     "config": {...}, "seconds": float}

``measured`` is a number (or null when the experiment could not measure it), ``ci`` a
``[lo, hi]`` pair or null for exact (enumerated) values, ``holds`` a bool. ``python -m
analysis.report --summary DIR/summary.json`` rewrites ``REPORT.md`` from a saved summary.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

REQUIRED_IDS = (
    "hierarchy_T_exponents",
    "grpo_M_sigma_sensitivity",
    "group_term_T_scaling",
    "martingale_identity",
    "tic_second_moment_bound",
    "grpo_near_old_gradient",
    "tic_vs_grpo_best_eta",
    "no_is_comparable",
    "ablation_table2",
)
CLAIM_KEYS = ("id", "claim", "expected", "measured", "ci", "holds")
#: the part of arXiv 2508.02833 v5 each claim tests (shown in REPORT.md, stored as ``source``)
SOURCES = {
    "hierarchy_T_exponents": "Thm 4.1–4.3",
    "hierarchy_T_ordering": "Thm 4.1–4.3, §4.3",
    "grpo_M_sigma_sensitivity": "Thm 4.1 (Eq. 12) vs 4.2–4.3",
    "grpo_sigma_sensitivity": "Thm 4.1 (Eq. 13) vs 4.2–4.3",
    "group_term_T_scaling": "Thm 4.1–4.3, group term",
    "martingale_identity": "Property 4.1 (App. B.1)",
    "tic_second_moment_bound": "§4.4",
    "grpo2_token_second_moment_T": "§4.4",
    "grpo_near_old_gradient": "§2.3, Eq. 7, App. A.1",
    "tic_error_below_grpo": "Eq. 7 vs Eq. 9, App. A.2",
    "tic_vs_grpo_best_eta": "Table 1, Fig. 2",
    "no_is_comparable": "Fig. 1, §2.3",
    "ablation_table2": "Table 2, App. C.3",
    "tic_unbiased": "Eq. 19 (App. A.2)",
    "grpo_biased_far": "§2.3",
    "tic_rloo_unbiased": "beyond v5 (RLOO baseline)",
    "on_policy_equal": "Eq. 7, 9 at θ = θ_old",
    "grpo_stale_bias_slope": "§2.3, X₁ of Eq. 7",
    "grpo_clipped_stale_bias_slope": "§2.3, Eq. 4",
    "tic_stale_unbiased": "Eq. 19",
    "group_size_slope": "Y₁ of Eq. 9 (G → ∞)",
    "group_size_batch_error_slope": "sampling (not a v5 claim)",
    "traj_weight_ess_decays": "ICLR-2026 review objection",
    "log_ratio_capped_frac": "implementation (ticgrpo)",
}


def make_claim(
    cid: str, claim: str, expected: str, measured: float | None, ci, holds: bool, *,
    experiment: str, detail: str = "",
) -> dict:  # fmt: skip
    """One verdict row; numbers are stored as plain floats (NaN becomes null)."""

    def clean(v):
        if v is None:
            return None
        v = float(v)
        return None if math.isnan(v) else v

    return {
        "id": cid,
        "source": SOURCES.get(cid, ""),
        "claim": claim,
        "expected": expected,
        "measured": clean(measured),
        "ci": None if ci is None else [clean(ci[0]), clean(ci[1])],
        "holds": bool(holds),
        "experiment": experiment,
        "detail": detail,
    }


def validate_summary(summary: dict) -> None:
    """Raise ``ValueError`` naming the first field that breaks the schema."""
    for key in ("claims", "config", "seconds"):
        if key not in summary:
            raise ValueError(f"summary.json: missing top-level field {key!r}")
    for i, row in enumerate(summary["claims"]):
        for key in CLAIM_KEYS:
            if key not in row:
                raise ValueError(f"summary.json: claims[{i}] lacks field {key!r}")
        if not isinstance(row["holds"], bool):
            raise ValueError(f"summary.json: claims[{i}].holds must be a bool")
        if row["ci"] is not None and len(row["ci"]) != 2:
            raise ValueError(f"summary.json: claims[{i}].ci must be [lo, hi] or null")
    ids = {row["id"] for row in summary["claims"]}
    missing = [i for i in REQUIRED_IDS if i not in ids]
    if missing and not summary["config"].get("only"):
        raise ValueError(f"summary.json: missing required claim ids {missing}")


def _fmt(v) -> str:
    if v is None:
        return "—"
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _cell(text) -> str:
    """Markdown-table-safe text (a ``|`` inside a cell would split it)."""
    return str(text).replace("|", "\\|")


def _value(r: dict) -> str:
    ci = "" if r["ci"] is None else f" [{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]"
    return f"{_fmt(r['measured'])}{ci}"


def _summary_lines(rows: list[dict]) -> list[str]:
    """The opening summary: what holds, what does not (with the numbers), how to read it."""
    exact = [r for r in rows if r["ci"] is None and r["holds"]]
    sampled = [r for r in rows if r["ci"] is not None and r["holds"]]
    failed = [r for r in rows if not r["holds"]]
    lines = ["## Summary", ""]
    if exact:
        lines.append("- **Exact results that hold** (enumeration, float64): "
                     + ", ".join(f"`{r['id']}`" for r in exact) + ".")  # fmt: skip
    if sampled:
        lines.append("- **Sampled results that hold** (95% CI): "
                     + "; ".join(f"`{r['id']}` {_value(r)}" for r in sampled) + ".")  # fmt: skip
    if failed:
        lines.append("- **Do not hold on our MDPs** (measurements, not bugs to tune away; the "
                     "details say why):")  # fmt: skip
        lines += [f"  - `{r['id']}` ({r.get('source', '')}): measured {_value(r)}; expected "
                  f"{r['expected']}" for r in failed]  # fmt: skip
    lines += [
        "- **Reading the theorem rows**: Thm 4.1–4.3 are upper bounds, so an exponent below a "
        "bound's is consistent with it, and a reversed or absent ordering of S is a result about "
        "these MDPs, not a refutation of an O(·) bound. Rows whose CI straddles the threshold "
        "need more seeds before a conclusion: run `ticgrpo reproduce --full`.",
        "",
    ]
    return lines


def render_report(summary: dict) -> str:
    """REPORT.md: a summary, the verdict table, per-claim details and the run's configuration."""
    rows = summary["claims"]
    held = sum(r["holds"] for r in rows)
    lines = [
        "# ticgrpo theory lab — report (arXiv 2508.02833 v5, section 4)",
        "",
        f"{held} of {len(rows)} claims hold (mode: {summary['config'].get('mode', '?')}, seed "
        f"{summary['config'].get('seed', '?')}, {summary['seconds']:.1f} s wall). Exact values "
        "come from enumeration in float64 (no CI); sampled values carry 95% intervals.",
        "",
        *_summary_lines(rows),
        "## Verdicts",
        "",
        "| id | v5 | claim | expected | measured | 95% CI | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "exact" if r["ci"] is None else f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]"
        verdict = "holds" if r["holds"] else "**does not hold**"
        lines.append(
            f"| `{r['id']}` | {_cell(r.get('source', ''))} | {_cell(r['claim'])} "
            f"| {_cell(r['expected'])} "
            f"| {_fmt(r['measured'])} | {ci} | {verdict} |"
        )
    lines += ["", "## Details", ""]
    for r in rows:
        if r.get("detail"):
            lines.append(f"- `{r['id']}` ({r.get('experiment', '')}): {r['detail']}")
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(summary["config"], indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_outputs(out: Path, claims: list[dict], config: dict, seconds: float) -> dict:
    """Write ``summary.json`` and ``REPORT.md`` into ``out``; returns the summary."""
    summary = {"claims": claims, "config": config, "seconds": float(seconds)}
    validate_summary(summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "REPORT.md").write_text(render_report(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    parser.add_argument("--summary", required=True, type=Path, help="path to summary.json")
    args = parser.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    validate_summary(summary)
    (args.summary.parent / "REPORT.md").write_text(render_report(summary))
    print(f"wrote {args.summary.parent / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
