"""Section 9, the public objects: the readiness probes ``listening`` and ``http_ok`` against real
sockets and servers."""

from __future__ import annotations

import contextlib
import socket
import sys
import textwrap
import threading
from typing import Iterator

import pytest

from xprocess import ProcessStarter


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
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone leaves it blocked)
        server.close()
        thread.join(5)


def answer(status: str) -> object:
    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    return handle


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
