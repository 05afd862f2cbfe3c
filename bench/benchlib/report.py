"""Rewrite the generated block of bench/RESULTS.md from bench/out/*.json: for each
benchmark, its command, when it ran, the commit and the machine, the cases it measured,
and every ratio with its median, its value in each round and its target. `make bench`
runs it after the benchmarks; the analysis around the block stays hand-written.

Usage: .venv/bin/python bench/benchlib/report.py
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
BEGIN = "<!-- make bench: begin (bench/benchlib/report.py writes this block) -->"
END = "<!-- make bench: end -->"


def ratios(data: dict) -> Iterator[tuple[str, float, list[float]]]:
    """(name, median, per-round values) of every ratio of a benchmark's JSON, whichever
    of the benchmarks' two layouts it uses: `ratios` with `ratios_per_round` (or
    `per_round`) beside it, or nested groups holding their own `per round NAME` lists."""
    per_round = data.get("ratios_per_round") or data.get("per_round") or {}

    def walk(group: dict, prefix: str, rounds: dict) -> Iterator[tuple[str, float, list]]:
        for key, value in group.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key} ", value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values = rounds.get(f"per round {key}", rounds.get(key))
                yield f"{prefix}{key}", value, values if isinstance(values, list) else []

    yield from walk(data.get("ratios", {}), "", per_round)


def _number(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


def section(data: dict) -> list[str]:
    machine = data.get("machine", {})
    lines = [
        f"### {data['bench']}",
        "",
        f"`{data.get('command', '?')}`, {data.get('when', '?')}, commit"
        f" {data.get('commit', 'not recorded')}, {machine.get('cpus', '?')} ×"
        f" {machine.get('cpu_model', '?')}, {machine.get('mem_gb', '?')} GB.",
        "",
    ]
    cases = data.get("cases")
    if isinstance(cases, dict) and all("rps" in c for c in cases.values()):
        lines += [
            "| case | what | req/s | p50 ms | p99 ms | errors |",
            "|---|---|---:|---:|---:|---:|",
            *(
                f"| {k} | {c.get('what', '')} | {_number(c['rps'])} | {c['p50_ms']:.1f} |"
                f" {c['p99_ms']:.1f} | {c.get('errors', '')} |"
                for k, c in cases.items()
            ),
            "",
        ]
    rows = list(ratios(data))
    if rows:
        targets = data.get("targets", {})
        lines += [
            "| ratio | median | per round | target |",
            "|---|---:|---|---|",
            *(
                f"| {name} | {median:g} | {' '.join(f'{v:g}' for v in values)} |"
                f" {targets.get(name, '')} |"
                for name, median, values in rows
            ),
            "",
        ]
    else:
        lines += [f"No ratios; the figures are in `bench/out/{data['bench']}.json`.", ""]
    return lines


def block(out: Path = OUT) -> str:
    lines = [BEGIN, "", "## Latest figures of each benchmark (bench/out/*.json)", ""]
    files = sorted(out.glob("*.json"))
    for path in files:
        lines += section(json.loads(path.read_text()))
    if not files:
        lines += ["No run yet: `make bench` writes bench/out/*.json.", ""]
    return "\n".join([*lines, END])


def rewrite(text: str, new_block: str) -> str:
    """`text` with its generated block replaced, or the block put after the title."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + new_block + rest.split(END, 1)[1]
    title, gap, body = text.partition("\n\n")
    return f"{title}{gap or chr(10) * 2}{new_block}\n\n{body}"


def main() -> None:
    RESULTS.write_text(rewrite(RESULTS.read_text(), block()))
    print(f"{RESULTS}: generated block rewritten from {OUT}/*.json")


if __name__ == "__main__":
    main()
