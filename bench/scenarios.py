"""Benchmark scenarios, run as pytest tests inside the virtualenv of the plugin under test.

Only the public API is used (the ``xprocess`` fixture, ``ProcessStarter``, ``ensure``,
``getinfo().terminate()``), so the same file runs against this project and pytest-xprocess 1.0.2.
Each test appends its measurements, as JSON lines, to the file named by $BENCH_OUT.
Sizes come from the environment so that ``bench/run --smoke`` can shrink them.
"""

import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc

import pytest

from xprocess import ProcessStarter

OUT = os.environ.get("BENCH_OUT", os.devnull)
REPEAT = int(os.environ.get("BENCH_REPEAT", "7"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "5"))
DEEP_LINES = int(os.environ.get("BENCH_DEEP_LINES", "200000"))
WARM_MB = int(os.environ.get("BENCH_WARM_MB", "100"))
XKILL_COUNT = int(os.environ.get("BENCH_XKILL_COUNT", "20"))
XKILL_STUBBORN = int(os.environ.get("BENCH_XKILL_STUBBORN", "2"))  # of them ignore SIGTERM
BUSY = int(os.environ.get("BENCH_BUSY", "1000"))  # unrelated processes on the machine
TREE_FILES = int(os.environ.get("BENCH_TREE_FILES", "2000"))  # in directories of 20, 10 of them a package

# The ready line carries the child's time.monotonic() (one clock for all processes on Linux).
READY = "print('ready', repr(time.monotonic()), flush=True)"
SLEEP = "time.sleep(600)"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def record(scenario, **values):
    with open(OUT, "a") as f:
        f.write(json.dumps({"scenario": scenario, **values}) + "\n")


def starter(code, pattern=r"^ready ([\d.]+)", **attrs):
    attrs.setdefault("max_read_lines", None)  # pytest-xprocess caps at 50 lines otherwise
    attrs.setdefault("timeout", 60)
    attrs.setdefault("args", [sys.executable, "-c", code])
    return type("S", (ProcessStarter,), {"pattern": pattern, **attrs})


def latency_ms(logpath):
    """Milliseconds since the child wrote its last ready line."""
    now = time.monotonic()
    with open(logpath, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 4096))
        stamps = re.findall(rb"ready ([\d.]+)", f.read())
    return (now - float(stamps[-1])) * 1000


@pytest.fixture
def xp(xprocess, request):
    names = []
    yield lambda name, *args, **kw: names.append(name) or xprocess.ensure(name, *args, **kw)
    for name in names:
        xprocess.getinfo(name).terminate()


def test_cold_start(xp):
    # The child sleeps first, so that the plugin is waiting when the line comes. The delay varies
    # from run to run (the same sequence for both plugins): a fixed one could fall on the best or
    # the worst moment of a plugin that polls every 0.1 s.
    delays = random.Random(20261126)
    for _ in range(REPEAT):
        Starter = starter(f"import time; time.sleep({delays.uniform(0.15, 0.35):.4f}); {READY}; {SLEEP}")
        _, logpath = xp("cold", Starter, restart=True)
        record("cold_start", ms=latency_ms(logpath))


def test_idle_wait(xp):
    Starter = starter(f"import time; time.sleep({IDLE_SECONDS}); {READY}; {SLEEP}")
    for _ in range(max(1, REPEAT // 2)):  # 3 or more: the median leaves out first-call imports
        cpu, switches = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        xp("idle", Starter, restart=True)
        # how often the waiting process woke up: ~100 a second if it polled every 10 ms
        wakeups = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
        record("idle_wait", cpu_s=time.process_time() - cpu, wakeups_per_s=wakeups / IDLE_SECONDS)


def test_deep_pattern(xp):
    chatter = f"sys.stdout.writelines('chatter line %d\\n' % i for i in range({DEEP_LINES}))"
    Starter = starter(f"import sys, time; time.sleep(0.2); {chatter}; {READY}; {SLEEP}")
    for _ in range(max(1, REPEAT // 2)):
        _, logpath = xp("deep", Starter, restart=True)
        record("deep_pattern", s=latency_ms(logpath) / 1000)


def test_warm_reuse(xp):
    code = (
        f"import os, time; {READY}\n"
        f"block = b'log line of sixty-four bytes, written after the ready line...\\n' * 16384\n"
        f"[os.write(1, block) for _ in range({WARM_MB})]\n"
        f"open('filled', 'w').close(); {SLEEP}"
    )
    Starter = starter(code)
    _, logpath = xp("warm", Starter, restart=True)
    filled = os.path.join(os.path.dirname(logpath), "filled")
    deadline = time.monotonic() + 120
    while not os.path.exists(filled) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        xp("warm", Starter)
        record("warm_reuse", ms=(time.perf_counter() - t0) * 1000)
    tracemalloc.start()
    xp("warm", Starter)
    record("warm_reuse", peak_mb=tracemalloc.get_traced_memory()[1] / 1e6, log_mb=os.path.getsize(logpath) / 1e6)
    tracemalloc.stop()


def test_warm_reuse_checked(xp):
    """Reuse of a server whose starter has a startup_check (a TCP connect): this project runs it
    once before each reuse (health on reuse); pytest-xprocess does not."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(64); {READY}\n"
        "while True: s.accept()[0].close()"
    )

    def check(self):
        probe = getattr(self, "listening", None)  # this project's probe; a hand-made one elsewhere
        if probe is not None:
            return probe(port)
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    Starter = starter(code, startup_check=check)
    xp("checked", Starter, restart=True)
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        xp("checked", Starter)
        record("warm_reuse_checked", ms=(time.perf_counter() - t0) * 1000)


def test_warm_reuse_tree(xp):
    """Reuse of a real ``python -m http.server`` whose ``config_files`` is a directory of
    TREE_FILES files that does not change: this project checks a stat of each file and directory
    against what it cached; pytest-xprocess has no config_files (it ignores the attribute)."""
    tree = os.path.join(os.getcwd(), "tree")
    shutil.rmtree(tree, ignore_errors=True)
    for i in range(TREE_FILES):
        package = os.path.join(tree, f"pkg{i // 200}", f"mod{i // 20}")
        os.makedirs(package, exist_ok=True)
        with open(os.path.join(package, f"file{i % 20}.py"), "w") as f:
            f.write(f"x = {i}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    Starter = starter("", pattern="Serving HTTP", args=args, config_files=["tree"])
    xp("tree", Starter, restart=True)
    time.sleep(2.1)  # a file changed in the last 2 s is hashed at each reuse: its stat cannot vouch for it yet
    xp("tree", Starter)  # (that reuse hashes them once more, and caches what their stats say)
    for _ in range(REPEAT * 10):
        t0 = time.perf_counter()
        xp("tree", Starter)
        record("warm_reuse_tree", ms=(time.perf_counter() - t0) * 1000)
    shutil.rmtree(tree)


def test_busy_machine(xp, xprocess):
    """A restart and a terminate of a trivial server with BUSY unrelated processes running."""
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(BUSY)]
    try:
        Starter = starter("", args=["sh", "-c", "echo ready; exec sleep 600"], pattern="ready")
        xp("busy", Starter, restart=True)
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            xp("busy", Starter, restart=True)
            record("busy_restart", ms=(time.perf_counter() - t0) * 1000)
        for _ in range(REPEAT):
            xp("busy", Starter)
            t0 = time.perf_counter()
            xprocess.getinfo("busy").terminate()
            record("busy_terminate", ms=(time.perf_counter() - t0) * 1000)
        # The state lost while the server runs (rm -rf .xprocess, git clean): the next ensure()
        # finds what runs under the name among all processes, stops it and starts one server.
        for _ in range(REPEAT):
            xp("busy", Starter)
            info = xprocess.getinfo("busy")
            old = info.pid
            shutil.rmtree(str(info.controldir))
            t0 = time.perf_counter()
            xp("busy", Starter)
            record("busy_lost_state", ms=(time.perf_counter() - t0) * 1000, orphaned=_alive(old))
            if _alive(old):  # pytest-xprocess leaves it running: not part of what is timed
                os.kill(old, 9)
    finally:
        for proc in sleepers:
            proc.kill()
        for proc in sleepers:
            proc.wait()


@pytest.mark.parametrize("repeat", [1] if os.environ.get("BENCH_SLOW_PLUGIN") else [3])
def test_early_exit(xp, repeat):
    Starter = starter("import sys; sys.exit(1)", timeout=20)
    for _ in range(repeat):
        t0 = time.monotonic()
        try:
            xp("early", Starter, restart=True)
        except Exception as exc:  # both plugins' errors
            record("early_exit", s=time.monotonic() - t0, error=type(exc).__name__)
        else:
            record("early_exit", s=None, error="no error")


def test_xkill_setup(xprocess):
    """Leaves XKILL_COUNT processes running (XKILL_STUBBORN ignore SIGTERM) for a timed --xkill."""
    ignore = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    for i in range(XKILL_COUNT):
        code = f"{ignore if i < XKILL_STUBBORN else ''}import time; {READY}; {SLEEP}"
        xprocess.ensure(f"k{i:02d}", starter(code))


@pytest.mark.parametrize("copy", range(16))
def test_xdist_server(xprocess, copy):
    """The xdist scenario: 16 tests share one server. Was it ready when ensure() returned?"""
    code = f"import time; open('starts', 'a').write('x'); time.sleep(0.3); {READY}; {SLEEP}"
    _, logpath = xprocess.ensure("shared", starter(code))
    with open(logpath) as f:
        record("xdist", ready=bool(re.search(r"^ready ", f.read(), re.M)))


def test_killed_session(xprocess):
    """Ensures a server, tells its pid, and waits for bench.py to SIGKILL this pytest."""
    pid, _ = xprocess.ensure("killed", starter(f"import time; {READY}; {SLEEP}"))
    record("killed_session", pid=pid)
    time.sleep(600)
