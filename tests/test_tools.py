"""The suite's own tools stay applicable: each hand-written mutation of tests/mutate.py replaces
text that is in xprocess.py exactly once and names a test that exists. A stale entry is found
here, in seconds, not by CI's mutation run after the rest of the matrix."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
try:
    import mutate
finally:
    sys.path.remove(str(ROOT / "tests"))

SOURCE = (ROOT / "xprocess.py").read_text()


@pytest.mark.parametrize("what, old, new, test", mutate.MUTATIONS, ids=[m[0] for m in mutate.MUTATIONS])
def test_each_hand_written_mutation_applies_once_and_names_a_test(what: str, old: str, new: str, test: str) -> None:
    assert SOURCE.count(old) == 1, f"{what}: the text to replace is in xprocess.py {SOURCE.count(old)} times"
    assert old != new
    for node_id in test.split():
        path, _, name = node_id.partition("::")
        tree = ast.parse((ROOT / path).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert name.split("[")[0] in names, f"{what}: {node_id} is not a test"
