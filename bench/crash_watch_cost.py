"""What watching for crashes costs each test, per process watched (issue 22: at most 20 us).

Usage: python bench/crash_watch_cost.py [--portable]

Starts 1, 4 and 16 sleeping processes through ``XProcess`` in a scratch project, then times what
the plugin's hooks add to each test that passes: the look for crashes at the start of its setup
and the report sections (a look again) after each of its three reports. Prints the median, over
rounds of 1000 tests, of the cost per test and per process. ``--portable`` hides
``os.pidfd_open`` to time the fallback (signal 0 and the start of each pid) that macOS takes.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--portable" in sys.argv and hasattr(os, "pidfd_open"):
    del os.pidfd_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xprocess

TESTS = 1000  # per round
ROUNDS = 30


class Sleeper(xprocess.ProcessStarter):
    pattern = "ready"
    args = (sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(3600)")


def per_test(xp: xprocess.XProcess) -> float:
    """Seconds per test of what the hooks call, for a test that passes."""
    session = xp._session
    t0 = time.perf_counter()
    for i in range(TESTS):
        nodeid = f"test_a.py::test_{i}"
        session.test_starts(nodeid)  # pytest_runtest_setup
        for _ in range(3):  # pytest_runtest_makereport: setup, call, teardown
            session.sections(nodeid, False)
    return (time.perf_counter() - t0) / TESTS


def main() -> None:
    mode = "fallback (no pidfd)" if not hasattr(os, "pidfd_open") else "pidfd"
    print(f"crash watch, {mode}: median cost per test and per process watched")
    with tempfile.TemporaryDirectory(prefix="xprocess-bench-watch-") as root, xprocess.XProcess(None, root) as xp:
        try:
            for count in (1, 4, 16):
                for n in range(count):
                    xp.ensure(f"p{n}", Sleeper)
                median = statistics.median(per_test(xp) for _ in range(ROUNDS))
                each = median / count
                print(f"  {count:2d} processes: {median * 1e6:6.2f} us per test, {each * 1e6:6.2f} us per process")
        finally:
            for info in xprocess._recorded_infos(xp, []):
                info.terminate(timeout=2)


if __name__ == "__main__":
    main()
