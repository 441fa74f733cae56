"""Ports, readiness probes and health on reuse, against real servers and sockets (issue 10)."""

from __future__ import annotations

import contextlib
import socket
import sys
import textwrap
import threading
from pathlib import Path
from typing import Iterator

import pytest
from conftest import alive, wait_for

from xprocess import ProcessStarter, XProcess


class Http(ProcessStarter):
    """Python's http.server on the starter's port, ready when it answers."""

    @property
    def args(self) -> list[object]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", self.port]

    def startup_check(self) -> bool:
        return self.http_ok("/")


def test_a_port_is_chosen_kept_and_reported(xp):
    first = xp.ensure("http", Http)
    assert isinstance(first.port, int)
    assert xp.getinfo("http").port == first.port
    assert (xp.statedir / "http" / "port").read_text() == str(first.port)
    with socket.create_connection(("127.0.0.1", first.port), timeout=5):
        pass
    again = xp.ensure("http", Http)  # reused: the same process, found at the same port
    assert again == first and again.port == first.port
    restarted = xp.ensure("http", Http, restart=True)  # the kept port is free again once it ended
    assert restarted[0] != first[0] and restarted.port == first.port


def test_a_starter_that_never_reads_its_port_has_none(xp):
    from conftest import SLEEPER, starter

    started = xp.ensure("noport", starter(SLEEPER))
    assert started.port is None and xp.getinfo("noport").port is None


def test_a_kept_port_taken_by_someone_else_is_replaced_at_the_next_start(xp):
    first = xp.ensure("http", Http)
    xp.getinfo("http").terminate()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the probes left TIME_WAITs
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        second = xp.ensure("http", Http)
    assert second.port != first.port
    assert xp.getinfo("http").port == second.port


def test_port_outside_a_start_is_a_free_port(tmp_path):
    with XProcess(None, tmp_path) as xp:
        port = Http(tmp_path / "nowhere", xp).port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free
    assert not (tmp_path / "nowhere").exists()


def test_workers_agree_on_one_port(pytester_xp):
    pytester_xp.makeconftest(
        textwrap.dedent("""
        import sys, pytest
        from xprocess import ProcessStarter

        class Http(ProcessStarter):
            @property
            def args(self):
                return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", self.port]

            def startup_check(self):
                return self.http_ok("/")

        @pytest.fixture
        def http(xprocess):
            return xprocess.ensure("http", Http)
    """)
    )
    pytester_xp.makepyfile(
        "".join(
            f"def test_{i}(http):\n    print('PORT', http.port)\n    import urllib.request\n"
            "    assert urllib.request.urlopen(f'http://127.0.0.1:{http.port}/').status == 200\n\n"
            for i in range(8)
        )
    )
    result = pytester_xp.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["http: started in *"])


# --- probes, against sockets that misbehave ---


@contextlib.contextmanager
def serving(handle: object, host: str = "127.0.0.1") -> Iterator[int]:
    """A listening socket whose connections go to ``handle(conn)`` in a thread; yields its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                handle(conn)  # type: ignore[operator]

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(5)


def answer(status: str) -> object:
    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    return handle


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[ProcessStarter]:
    with XProcess(None, tmp_path) as xp:
        yield ProcessStarter(tmp_path, xp)


def test_listening_and_http_ok_on_a_real_server(probe):
    with serving(answer("200 OK")) as port:
        assert probe.listening(port)
        assert probe.http_ok(f"http://127.0.0.1:{port}/health?x=1")


@pytest.mark.parametrize(
    "status, ok",
    [("204 No Content", True), ("302 Found", True), ("404 Not Found", False), ("503 Service Unavailable", False)],
)
def test_http_ok_is_a_status_below_400(probe, status, ok):
    with serving(answer(status)) as port:
        assert probe.http_ok(f"http://127.0.0.1:{port}/") is ok


def test_a_server_answering_503_then_200_becomes_ready(xp):
    code = textwrap.dedent("""
        import http.server, sys
        calls = []
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                calls.append(1)
                self.send_response(200 if len(calls) > 3 else 503)
                self.end_headers()
        http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """)

    class Warming(ProcessStarter):
        @property
        def args(self) -> list[object]:
            return [sys.executable, "-c", code, self.port]

        def startup_check(self) -> bool:
            return self.http_ok("/")

    started = xp.ensure("warming", Warming)
    assert "503" in started[1].read_text() and '"GET / HTTP/1.1" 200' in started[1].read_text()


def test_probes_say_false_to_garbage_resets_and_silence(probe):
    def close_at_once(conn: socket.socket) -> None:
        pass

    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"\x00\xffnot http at all\r\n\r\n")

    with serving(close_at_once) as port:
        assert probe.listening(port)  # it accepts...
        assert not probe.http_ok(f"http://127.0.0.1:{port}/")  # ...but does not answer
    with serving(garbage) as port:
        assert not probe.http_ok(f"http://127.0.0.1:{port}/")
    with socket.socket() as silent:  # listens, never accepts: the connect goes through, the read times out
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert not probe.http_ok(f"http://127.0.0.1:{silent.getsockname()[1]}/")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not probe.listening(port)
    assert not probe.http_ok(f"http://127.0.0.1:{port}/")
    assert not probe.listening(80, host="no-such-host.invalid")


def test_probes_on_ipv6_loopback(probe):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        ctx = serving(answer("200 OK"), host="::1")
        port = ctx.__enter__()
    except OSError:
        pytest.skip("::1 is not configured here")
    try:
        assert probe.listening(port, host="::1")
        assert probe.http_ok(f"http://[::1]:{port}/")
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.parametrize("port", ["80", 0, 70000, True, 8.0])
def test_listening_refuses_a_port_that_is_not_one(probe, port):
    with pytest.raises(ValueError, match="port must be an int"):
        probe.listening(port)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:80", "http:///nohost", 42])
def test_http_ok_refuses_what_is_not_an_http_url(probe, url):
    with pytest.raises(ValueError, match="url must be"):
        probe.http_ok(url)


# --- health on reuse ---

CLOSES_ITS_SOCKET = """
import os, signal, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
signal.signal(signal.SIGUSR1, lambda *_: server.close())  # alive, but no longer listening
print("ready", flush=True)
while True:
    time.sleep(1)
"""


class ClosesItsSocket(ProcessStarter):
    pattern = "ready"

    @property
    def args(self) -> list[object]:
        return [sys.executable, "-c", CLOSES_ITS_SOCKET, self.port]

    def startup_check(self) -> bool:
        return self.listening()


def test_a_process_alive_but_not_listening_is_restarted_on_reuse(pytester_xp):
    pytester_xp.makeconftest(
        "import pytest, sys\nfrom xprocess import ProcessStarter\n"
        f"CLOSES_ITS_SOCKET = {CLOSES_ITS_SOCKET!r}\n"
        + textwrap.dedent("""
        class ClosesItsSocket(ProcessStarter):
            pattern = "ready"

            @property
            def args(self):
                return [sys.executable, "-c", CLOSES_ITS_SOCKET, self.port]

            def startup_check(self):
                return self.listening()

        @pytest.fixture
        def srv(xprocess):
            return xprocess.ensure("srv", ClosesItsSocket)
    """)
    )
    pytester_xp.makepyfile("def test_a(srv):\n    pass\n")
    assert pytester_xp.runpytest_subprocess().ret == 0
    info = XProcess(None, pytester_xp.path).getinfo("srv")
    first = info.pid
    pytester_xp.runpytest_subprocess().stdout.fnmatch_lines(["xprocess: reused srv"])  # healthy: reused
    import os
    import signal

    os.kill(first, signal.SIGUSR1)
    probe = ProcessStarter(info.controldir, None)  # type: ignore[arg-type]
    assert wait_for(lambda: not probe.listening(info.port))
    result = pytester_xp.runpytest_subprocess()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["srv: restarted in * (its startup_check failed on reuse)"])
    assert not alive(first) and info.pid != first


def test_check_on_reuse_false_reuses_without_asking(xp):
    first = xp.ensure("srv", ClosesItsSocket)
    import os
    import signal

    os.kill(first[0], signal.SIGUSR1)
    probe = ProcessStarter(xp.statedir / "srv", xp)
    assert wait_for(lambda: not probe.listening(first.port))
    unchecked = type("Unchecked", (ClosesItsSocket,), {"check_on_reuse": False})
    assert xp.ensure("srv", unchecked)[0] == first[0]
    assert xp.ensure("srv", ClosesItsSocket)[0] != first[0]


def test_a_check_that_blocks_on_reuse_counts_as_failed(xp):
    first = xp.ensure("srv", ClosesItsSocket)
    hang = threading.Event()
    calls = []

    class Blocking(ClosesItsSocket):
        def startup_check(self) -> bool:
            calls.append(1)
            if len(calls) == 1:  # the check on reuse blocks; the new start's checks do not
                hang.wait(60)
            return self.listening()

    try:
        second = xp.ensure("srv", Blocking)
    finally:
        hang.set()  # lets the abandoned check's thread end
    assert second[0] != first[0]
    assert len(calls) >= 2


def time_waits(port: int) -> list[object]:
    import psutil

    return [c for c in psutil.net_connections("tcp4") if c.laddr.port == port and c.status == psutil.CONN_TIME_WAIT]


def test_a_kept_port_with_connections_in_time_wait_is_kept(xp):
    """http.server closes each connection first, so its port keeps TIME_WAIT entries for a minute
    after it stopped: a server can listen there again (SO_REUSEADDR), so the port stays the same."""
    first = xp.ensure("http", Http)
    with socket.create_connection(("127.0.0.1", first.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while client.recv(65536):  # read to the end: the server closed first (a TIME_WAIT on its side)
            pass
    assert xp.getinfo("http").terminate() == 1
    assert wait_for(lambda: time_waits(first.port)), "no TIME_WAIT left on the port: the test means nothing"
    second = xp.ensure("http", Http)
    assert second[0] != first[0] and second.port == first.port
