"""What an unchanged config_files tree costs a warm reuse (issue 30: at most 5 ms in all for 2,000 files).

Usage: python bench/config_tree_cost.py [FILES] [RUNS]

Starts a real ``python -m http.server`` through ``XProcess`` in a scratch project whose ``src/``
holds FILES files (2,000; in directories of 20, ten to a package), waits until no file changed
in the last 2 s (until then each reuse hashes them again), then times RUNS ``ensure()`` reuses
(500) with ``config_files = ["src"]`` and as many without (the same server, its reuse alone),
alternately, and prints the median and the fastest of each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import xprocess

FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 500


class Server(xprocess.ProcessStarter):
    pattern = "Serving HTTP"

    @property
    def args(self) -> list[str]:
        return [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]


class TreeServer(Server):
    config_files = ("src",)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="xprocess-bench-tree-") as root, xprocess.XProcess(None, root) as xp:
        for i in range(FILES):
            package = Path(root, "src", f"pkg{i // 200}", f"mod{i // 20}")
            package.mkdir(parents=True, exist_ok=True)
            (package / f"file{i % 20}.py").write_text(f"x = {i}\n")
        try:
            xp.ensure("tree", TreeServer)
            xp.ensure("plain", Server)
            time.sleep(2.1)
            xp.ensure("tree", TreeServer)  # hashes them once more, and caches what their stats say
            times: dict[str, list[float]] = {"tree": [], "plain": []}
            for _ in range(RUNS):
                for name, starter in (("tree", TreeServer), ("plain", Server)):
                    t0 = time.perf_counter()
                    xp.ensure(name, starter)
                    times[name].append((time.perf_counter() - t0) * 1000)
            print(f"warm reuse of http.server, median (fastest) of {RUNS} runs:")
            for name, what in (("tree", f"config_files = ['src'], {FILES:,} files"), ("plain", "no config_files")):
                print(f"  {what:38} {statistics.median(times[name]):.2f} ms ({min(times[name]):.2f} ms)")
        finally:
            for name in ("tree", "plain"):
                xp.getinfo(name).terminate(timeout=2)


if __name__ == "__main__":
    main()
