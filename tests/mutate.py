"""Re-run the mutation check: each mutation below is applied to a copy of xprocess.py, and the
test named beside it must fail on that copy (it passes on the real one).

    python tests/mutate.py            # all of them; exit status 1 if one survives

The list is the audit of issue 13 (the mutations no test caught then), kept so it can be rerun.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what the mutation does, text replaced, replacement, the test that must catch it)
MUTATIONS = [
    (
        "popen_kwargs dropped from Popen",
        "                    **launch.popen_kwargs,\n",
        "",
        "tests/test_ensure.py::test_popen_kwargs_reach_popen",
    ),
    (
        "kill_proc_tree ignored",
        "kill_proc_tree)[self.name]",
        "True)[self.name]",
        "tests/test_ensure.py::test_terminate_without_the_tree_leaves_the_children",
    ),
    (
        "env left out of the configuration",
        '            "env": self.env,\n',
        "",
        "tests/test_ensure.py::test_a_changed_env_restarts",
    ),
    (
        "the lock wait never times out",
        "            while not _flock(fd):\n                if time.monotonic() >= deadline:",
        "            while not _flock(fd):\n                if False:",
        "tests/test_ensure.py::test_the_lock_wait_times_out_while_another_session_starts_it",
    ),
    (
        "a last line without newline not matched when the child exits",
        "if idle >= _PAUSE or exitcode is not None:",
        "if idle >= _PAUSE:",
        "tests/test_ensure.py::test_a_last_line_without_newline_matches_when_the_child_exits",
    ),
    (
        "a child reaped elsewhere treated as still running",
        "return popen.poll() if popen.returncode is None else popen.returncode  # reaped elsewhere",
        "return None",
        "tests/test_ensure.py::test_a_child_reaped_by_someone_else_is_an_exit_not_a_hang",
    ),
    (
        "the wait ignores its events and polls every 10 ms",
        "        if self._watch is None or self._pidfd is None:  # a write or an exit would go unnoticed\n"
        "            timeout = min(timeout, _POLL)",
        "        timeout = min(timeout, _POLL)",
        "tests/test_ensure.py::test_the_wait_sleeps_on_events_not_on_a_timer",
    ),
    (
        "terminate() never returns -1",
        "(-1 if name in failed else 1 if procs else 0)",
        "(1 if procs else 0)",
        "tests/test_ownership.py::test_a_server_this_pytest_may_not_signal_is_reported_as_failed_to_terminate",
    ),
]


def main() -> int:
    source = (ROOT / "xprocess.py").read_text()
    survived = []
    MUTATIONS.insert(0, ("none (the tests pass on the real module)", "", "", " ".join(m[3] for m in MUTATIONS)))
    for what, old, new, test in MUTATIONS:
        if old and source.count(old) != 1:
            print(f"STALE   {what}: the text to replace is not in xprocess.py once")
            survived.append(what)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "xprocess.py").write_text(source.replace(old, new))
            # the mutated copy is imported as xprocess before pytest loads it as a plugin (an
            # editable install's finder would win over PYTHONPATH)
            run = (
                "import importlib.util, sys\n"
                f"spec = importlib.util.spec_from_file_location('xprocess', {str(Path(tmp) / 'xprocess.py')!r})\n"
                "module = sys.modules['xprocess'] = importlib.util.module_from_spec(spec)\n"
                "spec.loader.exec_module(module)\n"
                "import pytest\n"
                f"sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '--timeout=60', *{test.split()!r}]))\n"
            )
            done = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True)
            shutil.rmtree(Path(tmp) / "__pycache__", ignore_errors=True)
        caught = done.returncode != 0
        if not old:  # the baseline: every test must pass, or a "caught" means nothing
            print(f"{'BROKEN  ' if caught else 'baseline'} {what}")
            if caught:
                print(done.stdout[-3000:])
                return 1
            continue
        print(f"{'caught ' if caught else 'SURVIVED'} {what}  ({test})")
        if not caught:
            survived.append(what)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
