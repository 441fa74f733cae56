"""Generated mutants of the deciding functions (issue 27): mutmut 3 mutates them, the fast tests
(tests/test_table.py, tests/test_units_*.py) must kill each mutant, or it must be listed in
tests/equivalent-mutants.txt with the reason it changes nothing a test could see.

    python tests/mutants.py [--all]     every deciding function whole (tox -e mutants -- --all)
    python tests/mutants.py --sample    the ownership ones whole, a fixed fifth of the others (CI)
    python tests/mutants.py _read_state _ProcFS.children    only these functions

It needs mutmut 3 installed, and runs in a copy of the tree (mutmut writes a mutants/ directory
beside the code). It prints mutmut's own counts, the kill ratio and the time, and fails on a
survivor not listed as equivalent, or (the whole set) a ratio under 95 %. tests/mutate.py keeps
the hand-written mutations of the other functions, checked by the real-process tests."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The deciding sections: whether a process is ours and what a stop takes (run whole in CI too),
# then stopping, leases, the state reader and the readiness wait (sampled in CI).
OWNERSHIP = [
    "_owned",
    "_moved_from",
    "_find_ours",
    "_forked",
    "_ProcFS.handed_out",
    "_ProcFS.pids_after",
    "_ProcFS.children",
]
DECIDING = [
    *OWNERSHIP,
    "_signal",
    "_wait_gone",
    "_terminate",
    "_read_state",
    "_lease_files",
    "_lock_out",
    "_wait_ready",
    "_LogLines.lines",
    "_LogLines.partial",
]


def pattern(name: str, sample: bool = False) -> str:
    """mutmut's name for the mutants of a function or method (``_ProcFS.children``); with
    ``sample``, a fixed fifth of them (those numbered ...0 and ...5)."""
    cls, _, fn = name.rpartition(".")
    names = f"xprocess.xǁ{cls}ǁ{fn}__mutmut_*" if cls else f"xprocess.x_{fn}__mutmut_*"
    return names + "[05]" if sample else names


MUTMUT = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())"]


def equivalents() -> dict[str, str]:
    """The mutated lines known to change nothing observable, each with its reason."""
    known, reason = {}, ""
    for line in (ROOT / "tests" / "equivalent-mutants.txt").read_text().splitlines():
        if line.startswith("#"):
            reason = line[1:].strip()
        elif line.startswith("+"):
            known[line[1:].strip()] = reason
    return known


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="the functions to mutate (default: every deciding one)")
    parser.add_argument("--sample", action="store_true", help="ownership whole, a fixed fifth of the rest (CI)")
    parser.add_argument("--all", action="store_true", help="every deciding function whole (the default)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    chosen = [pattern(n, args.sample and n not in OWNERSHIP) for n in args.names or DECIDING]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("xprocess.py", "setup.py", "pyproject.toml"):
            shutil.copy(ROOT / name, work)
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        run = subprocess.run([*MUTMUT, "run", *chosen], cwd=work, capture_output=True, text=True)
        meta = work / "mutants" / "xprocess.py.meta"
        if not meta.exists():
            print(run.stdout[-3000:], run.stderr[-3000:])
            return 2
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        from mutmut.__main__ import status_by_exit_code

        status = {k: status_by_exit_code[v] for k, v in codes.items() if any(fnmatch(k, p) for p in chosen)}
        counts: dict[str, int] = {}
        for s in status.values():
            counts[s] = counts.get(s, 0) + 1
        known, unexplained, explained = equivalents(), [], []
        for name in sorted(k for k, s in status.items() if s == "survived"):
            shown = subprocess.run([*MUTMUT, "show", name], cwd=work, capture_output=True, text=True).stdout
            added = [line[1:].strip() for line in shown.splitlines() if line.startswith("+ ")]
            line = added[0] if added else "?"
            (explained if line in known else unexplained).append((name, line))
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    total = sum(counts.values())
    ratio = caught / total if total else 0.0
    print("mutmut over the deciding functions:", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print(f"{total} mutants, {caught} caught ({ratio:.1%}), {time.monotonic() - began:.0f} s")
    for name, line in explained:
        print(f"equivalent  {name}: {line}")
    for name, line in unexplained:
        print(f"SURVIVED    {name}: {line}")
    # the ratio is of the whole set: a sample's share hangs on where its few equivalents fall
    return 1 if unexplained or total == 0 or (ratio < 0.95 and not args.sample) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
