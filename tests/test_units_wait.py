"""The readiness wait (``_wait_ready``), case by case in milliseconds, through ``ensure()`` with tiny
shell children: each whole line searched for the pattern, the cap of ``max_read_lines``, a last line
without its newline (matched once output pauses, or the child exits), a pattern that is a property
(read once the child runs), ``startup_check`` (after the pattern), an exit before ready, a timeout,
and the words of each error. The heavy cases (a gigabyte of log, overlong lines, the evented sleep,
a daemonizing server) stay in test_wait.py."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import alive, py

import xprocess
from xprocess import ProcessExitedError, ProcessStarter, StartupTimeoutError, XProcessError


def argv(script: str) -> list[str]:
    return ["sh", "-c", script]


def sh(script: str, pattern: object = "ready", **attrs: object) -> type[ProcessStarter]:
    """A starter running ``script`` in ``sh``; a wait a mutant breaks ends in 2 s, not 120."""
    return type("Starter", (ProcessStarter,), {"args": argv(script), "pattern": pattern, "timeout": 2, **attrs})


SLEEP = "exec sleep 600"  # the child runs on once ready


def reason(excinfo: pytest.ExceptionInfo[XProcessError]) -> str:
    return excinfo.value.reason


# --- the pattern, line by line ---


def test_the_first_line_with_the_pattern_makes_it_ready_and_its_logfile_starts_after_that_line(xp):
    started = xp.ensure("srv", sh(f"printf 'noise\\nready 1\\nready 2\\n'; {SLEEP}"))
    assert started.match.string == "ready 1\n" and started.match.group() == "ready"
    assert started.logfile.readline() == "ready 2\n"
    assert alive(started[0])


def test_a_child_that_exits_before_its_ready_line_fails_with_its_exit_code_and_last_words(xp):
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("srv", sh("echo 'boom: cannot bind'; exit 3"))
    assert reason(excinfo) == "exited with code 3 before it was ready"
    assert excinfo.value.exitcode == 3 and excinfo.value.name == "srv"
    assert "xprocess 'srv' exited with code 3 before it was ready" in str(excinfo.value)
    assert "boom: cannot bind" in str(excinfo.value)


def test_a_child_that_never_prints_its_pattern_fails_when_its_timeout_ends(xp):
    with pytest.raises(StartupTimeoutError) as excinfo:
        xp.ensure("srv", sh(f"echo starting; {SLEEP}", timeout=0.05))
    assert reason(excinfo) == "was not ready after its timeout of 0.05 s"
    assert excinfo.value.exitcode is None
    assert not xp.getinfo("srv").isrunning()


def test_a_failed_wait_is_hidden_from_the_traceback_pytest_shows(xp):
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("srv", sh("exit 3"))
    # pytest 8 filters by the exception's hidden frames; pytest 7 by the default filter
    kept = excinfo.traceback.filter(excinfo) if pytest.version_tuple >= (8,) else excinfo.traceback.filter()
    shown = [Path(entry.path).name for entry in kept]
    assert "xprocess.py" not in shown and Path(__file__).name in shown  # pytest points at the test's line


def test_the_error_says_how_long_the_start_waited_at_most_as_long_as_ensure_took(xp):
    began = time.monotonic()
    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("srv", sh("exit 3"))
    took = time.monotonic() - began
    waited = float(re.search(r"waited: +([0-9.]+) s", str(excinfo.value)).group(1))
    assert 0 <= waited <= took + 0.005  # printed to 10 ms


def test_a_ready_line_behind_more_log_than_can_be_read_before_the_timeout_is_a_timeout(xp):
    """The wait reads the log only until its timeout ends, however much of it there is: here 2 GiB
    of 512 KiB lines (of holes: a sparse file uses no disk for them), then the ready line."""
    code = """
        import os
        fd = os.open("xprocess.log", os.O_WRONLY)  # not appending: each newline at its offset
        for end in range(1 << 19, 1 << 31, 1 << 19):
            os.pwrite(fd, b"\\n", end - 1)
        print("ready", flush=True)  # stdout appends: after the 2 GiB
        os.close(fd)
        import time; time.sleep(600)
    """
    try:
        with pytest.raises(StartupTimeoutError) as excinfo:
            xp.ensure("srv", sh("", args=py(code), pattern="^ready$", timeout=0.2))
        assert reason(excinfo) == "was not ready after its timeout of 0.2 s"
    finally:
        xp.getinfo("srv").logpath.unlink(missing_ok=True)


# --- max_read_lines: the non-blank lines before the ready line ---


@pytest.mark.parametrize("cap", [3, 4])
def test_max_read_lines_counts_the_non_blank_lines_before_the_ready_line(xp, cap):
    Starter = sh(f"printf 'one\\n\\n  \\ntwo\\nthree\\nready\\n'; {SLEEP}", max_read_lines=cap)
    if cap == 4:  # three lines before it: the ready line is the fourth
        assert xp.ensure("srv", Starter).match.string == "ready\n"
        return
    with pytest.raises(XProcessError) as excinfo:
        xp.ensure("srv", Starter)
    assert reason(excinfo) == "its pattern was not in its first 3 lines"
    assert excinfo.value.exitcode is None and not isinstance(excinfo.value, StartupTimeoutError)
    assert not xp.getinfo("srv").isrunning()


# --- a last line without its newline ---


def test_a_prompt_without_newline_matches_once_output_pauses_and_the_logfile_starts_after_it(xp, monkeypatch):
    monkeypatch.setattr(xprocess, "_PAUSE", 0.01)
    started = xp.ensure("srv", sh(f"printf 'db ready> '; {SLEEP}", pattern=r"ready> $"))
    assert started.match.group() == "ready> " and started.match.string == "db ready> "
    assert started.logfile.read() == ""


def test_a_last_line_without_newline_is_no_match_while_output_may_go_on(xp, monkeypatch):
    monkeypatch.setattr(xprocess, "_PAUSE", 60.0)
    with pytest.raises(StartupTimeoutError):
        xp.ensure("srv", sh(f"printf 'ready'; {SLEEP}", timeout=0.1))


def test_a_last_line_without_newline_matches_at_once_when_the_child_exits(xp, monkeypatch):
    monkeypatch.setattr(xprocess, "_PAUSE", 60.0)
    started = xp.ensure("srv", sh("printf 'one\\nready> '"))
    assert started.match.string == "ready> "
    assert started.logfile.read() == ""


# --- a pattern that is a property ---


def test_a_pattern_property_is_read_once_the_child_runs(xp):
    class Starter(ProcessStarter):
        args = argv(f'echo $$ > pid; echo noise; echo "serving as $$"; {SLEEP}')
        timeout = 2

        @property
        def pattern(self):  # the pid file is written by the child: "not yet" (an OSError) until then
            return f"serving as {(self.control_dir / 'pid').read_text().strip()}$"

    started = xp.ensure("srv", Starter)
    assert started.match.string == f"serving as {started[0]}\n"


def test_a_pattern_property_that_gives_none_without_a_startup_check_is_an_error_naming_the_process(xp):
    class Starter(ProcessStarter):
        args = argv(SLEEP)
        timeout = 2

        @property
        def pattern(self):
            return None

    needs = "xprocess 'srv': the starter needs a pattern, a startup_check method or a wait"
    with pytest.raises(TypeError, match=needs):
        xp.ensure("srv", Starter)
    assert not xp.getinfo("srv").isrunning()


# --- startup_check, once the pattern matched ---


def test_startup_check_runs_only_after_the_pattern_matched_and_until_it_passes(xp):
    seen: list[bool] = []

    class Starter(ProcessStarter):
        args = argv(f"echo starting; sleep 0.05; echo ready; {SLEEP}")
        pattern = "ready"
        timeout = 2

        def startup_check(self):
            seen.append("ready" in Path(self.process.getinfo("srv").logpath).read_text())
            return "yes" if len(seen) == 3 else 0  # any true value passes

    started = xp.ensure("srv", Starter)
    assert seen == [True, True, True]
    assert started.match.string == "ready\n"


def test_a_startup_check_alone_makes_it_ready_with_the_logfile_at_the_end_of_the_log(xp):
    class Starter(ProcessStarter):
        args = argv(f"echo early; {SLEEP}")
        timeout = 2

        def startup_check(self):
            return "early" in Path(self.process.getinfo("srv").logpath).read_text()

    started = xp.ensure("srv", Starter)
    assert started.match is None
    assert started.logfile.read() == ""


def test_a_startup_check_that_never_passes_fails_at_the_timeout(xp):
    class Starter(ProcessStarter):
        args = argv(f"echo ready; {SLEEP}")
        pattern = "ready"
        timeout = 0.05

        def startup_check(self):
            return False

    with pytest.raises(StartupTimeoutError) as excinfo:
        xp.ensure("srv", Starter)
    assert reason(excinfo) == "was not ready after its timeout of 0.05 s"
    assert "(and startup_check)" in str(excinfo.value)


def test_a_startup_check_that_passes_once_the_child_exited_answered_for_another_process(xp):
    class Starter(ProcessStarter):
        args = argv("echo ready")  # and it exits
        pattern = "ready"
        timeout = 2

        def startup_check(self):  # as a daemon it left would answer: once it has exited
            pid = self.process.getinfo("srv").pid
            if hasattr(os, "waitid"):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            else:  # the portable path (tox -e portable): until it is a zombie, or reaped by the wait
                for _ in range(2000):
                    try:
                        with open(f"/proc/{pid}/stat") as f:
                            if f.read().rpartition(")")[2].split()[0] == "Z":
                                break
                    except FileNotFoundError:
                        break
                    time.sleep(0.001)
            return True

    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("srv", Starter)
    assert reason(excinfo) == "exited with code 0: its startup_check passed, but for another process"
    assert excinfo.value.exitcode == 0


def test_a_pattern_alone_is_ready_even_if_the_child_exited_right_after_its_ready_line(xp):
    started = xp.ensure("srv", sh("echo ready; exit 3"))
    assert started.match.string == "ready\n"


# --- the log's lines (_LogLines), read as the log grows, in chunks of any size ---

LOG = (
    b"one\r\ntwoX\rthree\n\nfour  \r\n"  # each ending, an empty line, trailing spaces kept
    + b"x" * 20 + b"\r\n"  # overlong lines (over 8 bytes here) are cut, whatever ends them
    + b"y" * 19 + b"\r" + b"z" * 30 + b"\n" + b"s" * 8 + b"\r\n" + b"t" * 9 + b"\n"
    + b"u" * 20 + b"\rab\rcd\n" + b"m" * 20 + b"\na\nb\nc\n"  # short lines right after an overlong one
    + b"q" * 7 + b"\r\n" + b"p" * 7 + b"\rnext\n"  # 8 bytes with their "\r": not yet overlong
    + b"\xff\xfe bad\n"  # invalid UTF-8 is replaced
)  # fmt: skip


def expected(log: bytes, cut: int, reads: set[int]) -> tuple[list[tuple[str, int]], tuple[str, int]]:
    """The lines of ``log`` (ending in "\\n", with the offset of their end) and its unfinished last
    line, as the reader must give them: a line still unfinished at the end of a read (``reads``:
    where they ended) and longer than ``cut`` bytes by then is cut to ``cut`` bytes, whatever ends it."""
    parts, lines, start = log.splitlines(keepends=True), [], 0
    rest = parts.pop() if parts and not parts[-1].endswith(b"\n") else b""  # a "\r" may be half of "\r\n"
    for part in parts:
        end = start + len(part)
        held = end if part.endswith(b"\r") else end - 1  # a lone "\r" is a line's end only once more came
        text = part.rstrip(b"\r\n")
        if any(start + cut < at <= held for at in reads):
            text = text[:cut]
        lines.append((text.decode("utf-8", "replace") + "\n", end))
        start = end
    if rest.endswith(b"\r"):
        return lines, (rest[:-1][:cut].decode("utf-8", "replace") + "\n", len(log))
    return lines, (rest[:cut].decode("utf-8", "replace"), len(log))


@pytest.mark.parametrize("tail", [b"", b"tail\r", b"w" * 25, b"v" * 9 + b"\r", b"half \xc3", b"bad \xff\r"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 9, 4096])
@pytest.mark.parametrize("written", [1, 7, None])  # bytes appended between two reads (None: all at once)
def test_the_log_s_lines_are_the_same_however_it_grows_and_is_read(tmp_path, monkeypatch, tail, chunk, written):
    monkeypatch.setattr(xprocess, "_MAX_LINE", 8)
    monkeypatch.setattr(xprocess, "_CHUNK", chunk)
    log, path = LOG + tail, tmp_path / "log"
    path.write_bytes(b"")
    reader, got = xprocess._LogLines(path), []
    try:
        step, reads, read = written or len(log), set(), 0
        for at in range(0, len(log), step):
            with open(path, "ab") as f:
                f.write(log[at : at + step])
            got.extend(reader.lines())
            while read < min(at + step, len(log)):  # where the reads of this call ended
                read = min(read + chunk, at + step, len(log))
                reads.add(read)
        assert (got, reader.partial()) == expected(log, 8, reads)
    finally:
        reader.close()


def test_a_reader_whose_clock_stands_at_its_deadline_stops_after_one_chunk(tmp_path, monkeypatch):
    """The deadline is reached at its instant, as ``_Deadline.expired`` says: the read then is the last
    (the clock stands still here, so that the instant is hit; test_wait.py has a deadline passed)."""
    log = tmp_path / "log"
    log.write_bytes(b"line\n" * 1000)
    monkeypatch.setattr(xprocess, "_CHUNK", 50)
    monkeypatch.setattr(xprocess, "time", SimpleNamespace(monotonic=lambda: 100.0))
    reader = xprocess._LogLines(log, deadline=100.0)
    try:
        assert [end for _, end in reader.lines()] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    finally:
        reader.close()


@pytest.mark.parametrize("deadline", ["passed", "at this instant"])
def test_a_reader_at_its_deadline_inside_an_overlong_line_stops_after_one_chunk(tmp_path, monkeypatch, deadline):
    """A child writing one endless line (no newline ever) must not hold the wait past the timeout
    either: the skip to an overlong line's end stops at the deadline too, from its instant on."""
    monkeypatch.setattr(xprocess, "_CHUNK", 16)
    monkeypatch.setattr(xprocess, "_MAX_LINE", 8)
    if deadline == "at this instant":  # the clock stands still, so that the instant is hit
        monkeypatch.setattr(xprocess, "time", SimpleNamespace(monotonic=lambda: 100.0))
    log = tmp_path / "log"
    log.write_bytes(b"x" * 4096)
    reader = xprocess._LogLines(log, deadline=100.0 if deadline == "at this instant" else 0.0)
    try:
        for _ in range(2):  # the first read makes it an overlong line; the second skips inside it
            assert list(reader.lines()) == []
        consumed = reader.partial()[1]
    finally:
        reader.close()
    assert consumed == 2 * 16


def test_a_port_held_by_the_failed_starts_own_fork_is_no_holder_to_name(xp):
    """The hints tell a holder of the starter's port apart from the start's own processes by its
    session (the start's pid leads it): a fork of its own that inherited the listening socket, left
    when the process exited, is stopped with the start, and named as no holder."""

    class Starter(ProcessStarter):
        pattern = "never"
        timeout = 2

        @property
        def args(self):
            return py(
                "import os, socket, sys, time\n"
                f"s = socket.create_server(('127.0.0.1', {self.port}))\n"
                "if os.fork() == 0:\n"
                "    time.sleep(600)\n"  # the fork holds the listening socket
                "os._exit(3)\n"
            )

    with pytest.raises(ProcessExitedError) as excinfo:
        xp.ensure("srv", Starter)
    assert reason(excinfo) == "exited with code 3 before it was ready"
    assert "hint:" not in str(excinfo.value), str(excinfo.value)
