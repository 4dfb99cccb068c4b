"""The conformance table (docs/trino-conformance.md) and the emulator's tests cannot drift apart.

Every row of the table has an id (``Q2``, ``J4``, ...) and names its tests; every emulator test names the
rows it covers with a ``conformance: ID, ...`` line (a ``//`` comment above a Rust test, a docstring in a
Python test). This checks, without starting anything, that every row has at least one test naming it,
that every test a row names exists and names that row, and that no test names a row the table lacks.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "trino-conformance.md"
RUST_TESTS = ROOT / "tools" / "src" / "bin" / "trino-emulator"
PYTHON_TESTS = ROOT / "tests" / "e2e"

ROW_ID = r"[A-Z]{1,2}\d+"
#: A table row: ``| **Q2** | ...`` (the id in bold in the first cell).
ROW = re.compile(rf"^\|\s*\*\*({ROW_ID})\*\*\s*\|(.*)$", re.M)
MARKER = re.compile(rf"conformance:\s*({ROW_ID}(?:\s*,\s*{ROW_ID})*)")
NAMED_TEST = re.compile(r"`([\w.]+\.(?:rs|py)::\w+)`")


def rows() -> dict[str, str]:
    """Row id → the rest of its table line."""
    found: dict[str, str] = {}
    for row_id, rest in ROW.findall(DOC.read_text()):
        assert row_id not in found, f"row {row_id} appears twice in {DOC.name}"
        found[row_id] = rest
    return found


def _ids(marker: str) -> set[str]:
    return {part.strip() for part in marker.split(",")}


def marked_tests() -> dict[str, set[str]]:
    """``file::test`` → the row ids it names, from the Rust and Python test sources."""
    found: dict[str, set[str]] = {}
    for path in sorted(RUST_TESTS.glob("*.rs")):
        pending: set[str] = set()
        for line in path.read_text().splitlines():
            marker = MARKER.search(line)
            if marker and line.strip().startswith("//"):
                pending |= _ids(marker.group(1))
                continue
            fn = re.match(r"\s*(?:async\s+)?fn\s+(\w+)", line)
            if fn and pending:
                found[f"{path.name}::{fn.group(1)}"] = pending
                pending = set()
    for path in sorted(PYTHON_TESTS.glob("test_*.py")):
        text = path.read_text()
        for test in re.finditer(r"^def (test_\w+)\(.*?\):\n((?:\s*\"\"\"[\s\S]*?\"\"\")?)", text, re.M):
            marker = MARKER.search(test.group(2))
            if marker:
                found[f"{path.name}::{test.group(1)}"] = _ids(marker.group(1))
    return found


def test_every_row_has_a_test_that_names_it():
    table, marked = rows(), marked_tests()
    assert len(table) >= 40, f"only {len(table)} rows found in {DOC}: is the table's format still `| **ID** |`?"
    covered = set().union(*marked.values())
    missing = sorted(set(table) - covered)
    assert not missing, f"rows without a test naming them: {missing}"
    unknown = {name: sorted(ids - set(table)) for name, ids in marked.items() if ids - set(table)}
    assert not unknown, f"tests naming rows the table lacks: {unknown}"


def test_the_tests_each_row_names_exist_and_name_the_row():
    marked = marked_tests()
    problems = []
    for row_id, rest in rows().items():
        named = NAMED_TEST.findall(rest)
        if not named:
            problems.append(f"{row_id}: names no test")
        for name in named:
            if name not in marked:
                problems.append(f"{row_id}: names {name}, which does not exist or names no row")
            elif row_id not in marked[name]:
                problems.append(f"{row_id}: names {name}, which covers {sorted(marked[name])} but not {row_id}")
    assert not problems, "\n".join(problems)
