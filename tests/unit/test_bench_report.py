"""bench/benchlib/report.py: the generated block of bench/RESULTS.md, from the JSON
layouts the benchmarks write."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "bench" / "benchlib" / "report.py"
spec = importlib.util.spec_from_file_location("bench_report", REPORT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

STACK = {
    "bench": "stack",
    "when": "2026-12-08T00:59:52+0000",
    "commit": "58e7f4d5124a",
    "machine": {"cpus": 2, "cpu_model": "AMD EPYC", "mem_gb": 23.5},
    "command": "python bench/stack.py --rounds 3",
    "cases": {"d": {"what": "DB read", "rps": 523.3, "p50_ms": 57.11, "p99_ms": 157.42}},
    "ratios": {"d/e": 1.15},
    "ratios_per_round": {"d/e": [1.17, 1.11, 1.06]},
    "targets": {"d/e": ">= 1.8"},
}
# db_tls.py's layout: groups of ratios, each holding its own per-round lists.
DB_TLS = {
    "bench": "db_tls",
    "ratios": {"miss": {"tls/plain": 0.78, "per round tls/plain": [0.72, 0.83]}},
}


def test_every_ratio_comes_with_its_rounds_in_either_layout():
    assert list(report.ratios(STACK)) == [("d/e", 1.15, [1.17, 1.11, 1.06])]
    assert list(report.ratios(DB_TLS)) == [("miss tls/plain", 0.78, [0.72, 0.83])]


def test_the_block_names_the_run_and_shows_cases_rounds_and_targets(tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps(STACK))
    block = report.block(tmp_path)
    assert "commit 58e7f4d5124a, 2 × AMD EPYC" in block
    assert "| d | DB read | 523 | 57.1 | 157.4 |" in block
    assert "| d/e | 1.15 | 1.17 1.11 1.06 | >= 1.8 |" in block


def test_only_the_block_is_rewritten_and_a_rewrite_is_stable():
    text = "# Results\n\nintro\n\n## Analysis\n\nhand-written\n"
    first = report.rewrite(text, f"{report.BEGIN}\nold\n{report.END}")
    assert first.startswith("# Results\n\n<!-- make bench: begin")
    second = report.rewrite(first, f"{report.BEGIN}\nnew\n{report.END}")
    assert "old" not in second and "\nnew\n" in second
    assert second.endswith("intro\n\n## Analysis\n\nhand-written\n")
    assert report.rewrite(second, f"{report.BEGIN}\nnew\n{report.END}") == second
