"""The README's example inventory for "Deploying your own app" is the inventory that
molecule/anyapp deploys and tests, not a copy that drifts from it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SCENARIO_VARS = REPO / "molecule" / "anyapp" / "group_vars" / "all.yml"
HEADING = "## Deploying your own app"


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level
    (lines inside fenced code blocks, such as YAML comments, are not headings)."""
    lines = markdown.splitlines()
    assert heading in lines, f"README.md has no section {heading!r}"
    start = lines.index(heading) + 1
    level = len(heading.split(" ", 1)[0])
    fenced = False
    for i in range(start, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", lines[i]) and len(lines[i].split(" ", 1)[0]) <= level:
            return "\n".join(lines[start:i])
    return "\n".join(lines[start:])


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_section_parser_finds_the_block():
    doc = (
        "# t\n## A\n```yaml\n# c\na: 1\n```\n"
        "### sub\n```yaml\nb: 2\n```\n## B\n```yaml\nc: 3\n```\n"
    )
    assert [yaml.safe_load(b) for b in yaml_blocks(section(doc, "## A"))] == [{"a": 1}, {"b": 2}]


def test_readme_example_inventory_is_the_anyapp_scenario_inventory():
    blocks = yaml_blocks(section(README.read_text(), HEADING))
    assert blocks, f"no ```yaml block under {HEADING!r} in README.md"
    example = yaml.safe_load(blocks[0])
    scenario = yaml.safe_load(SCENARIO_VARS.read_text())
    assert example == scenario, (
        f"the yaml block under {HEADING!r} differs from {SCENARIO_VARS.relative_to(REPO)}: "
        f"keys only in README {sorted(set(example) - set(scenario))}, "
        f"only in the scenario {sorted(set(scenario) - set(example))}, "
        f"different {sorted(k for k in set(example) & set(scenario) if example[k] != scenario[k])}"
    )
