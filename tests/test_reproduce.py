"""``ticgrpo reproduce`` end to end on a subset, the summary schema, and figure re-runs."""

from __future__ import annotations

import importlib
import json

import pytest

from analysis.report import REQUIRED_IDS, render_report, validate_summary
from paper_figs import fig_group_size, fig_mechanisms, fig_unbiasedness
from toy.reproduce import main


@pytest.fixture(scope="module")
def quick_subset(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["--out", str(out), "--only", "unbiased,group_size,mechanisms"]) == 0
    return out


def test_subset_writes_figures_data_report_and_summary(quick_subset):
    for name, fig in (("unbiased", "fig_unbiasedness"), ("group_size", "fig_group_size"),
                      ("mechanisms", "fig_mechanisms")):  # fmt: skip
        folder = quick_subset / name
        assert (folder / "data.json").stat().st_size > 0
        assert (folder / "data.csv").stat().st_size > 0
        for ext in ("png", "pdf"):
            assert (folder / f"{fig}.{ext}").stat().st_size > 1000
    summary = json.loads((quick_subset / "summary.json").read_text())
    validate_summary(summary)
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["tic_unbiased"]["holds"] and claims["tic_unbiased"]["measured"] < 1e-8
    assert claims["group_size_slope"]["ci"][0] < claims["group_size_slope"]["measured"]
    assert claims["martingale_identity"]["holds"] and claims["martingale_identity"]["ci"] is None
    assert claims["tic_second_moment_bound"]["measured"] <= 1.0
    assert claims["martingale_identity"]["source"].startswith("Property 4.1")
    report = (quick_subset / "REPORT.md").read_text()
    assert report.index("## Summary") < report.index("## Verdicts")
    assert "| `tic_unbiased` | Eq. 19" in report


def test_figures_rerun_alone_from_saved_data(quick_subset, tmp_path):
    for module, name in ((fig_unbiasedness, "unbiased"), (fig_group_size, "group_size"),
                         (fig_mechanisms, "mechanisms")):  # fmt: skip
        assert module.main(["--data", str(quick_subset / name / "data.json"), "--out",
                            str(tmp_path)]) == 0  # fmt: skip
    assert (tmp_path / "fig_unbiasedness.png").exists() and (
        tmp_path / "fig_group_size.pdf"
    ).exists()


def test_summary_schema_rejects_missing_fields():
    row = {"id": "x", "claim": "c", "expected": "e", "measured": 1.0, "ci": None, "holds": True}
    good = {"claims": [dict(row, id=i) for i in REQUIRED_IDS], "config": {}, "seconds": 1.0}
    validate_summary(good)
    assert "| `hierarchy_T_exponents` |" in render_report(good)
    with pytest.raises(ValueError, match="missing required claim ids"):
        validate_summary({**good, "claims": good["claims"][1:]})
    bad = json.loads(json.dumps(good))
    del bad["claims"][0]["holds"]
    with pytest.raises(ValueError, match=r"claims\[0\] lacks field 'holds'"):
        validate_summary(bad)
    with pytest.raises(ValueError, match="seconds"):
        validate_summary({"claims": [], "config": {}})


def test_unknown_experiment_is_rejected(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().out


@pytest.mark.slow
def test_full_quick_run_has_every_required_claim(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    validate_summary(summary)
    assert set(REQUIRED_IDS) <= {c["id"] for c in summary["claims"]}
    assert all(c["source"] for c in summary["claims"])  # every row cites v5 (or says it does not)
    for fig in sorted(tmp_path.glob("*/fig_*.png")):  # every figure re-draws from its data alone
        module = importlib.import_module(f"paper_figs.{fig.stem}")
        assert module.main(["--data", str(fig.parent / "data.json"), "--out", str(fig.parent)]) == 0
    assert summary["seconds"] < 600  # wall clock on a shared machine; CPU time is in the docs
