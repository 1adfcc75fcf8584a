"""bench/bench_step_guard.py runs at tiny sizes and reports both arms (no timing asserted)."""

import json

from bench import bench_step_guard


def test_step_guard_bench_reports_both_arms(tmp_path, monkeypatch):
    monkeypatch.setattr("bench._common.RESULTS_DIR", tmp_path)
    argv = ["--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--rows", "2",
            "--prompt-len", "4", "--completion", "4", "--repeats", "1"]  # fmt: skip
    assert bench_step_guard.main(argv) == 0
    rows = json.loads((tmp_path / "step_guard_cpu.json").read_text())["rows"]
    assert [r["guard"] for r in rows] == ["off", "on"]
    assert rows[0]["copy_mb"] == 0.0 and rows[1]["copy_mb"] > 0
    assert all(r["step_cpu_s"] >= 0 and r["fwd_bwd_cpu_s"] > 0 for r in rows)
