"""The node agent's HTTP transport against real servers on loopback: kept-alive
connections, a connection the server closed while idle, unreachable and silent servers,
streamed bodies, and the HTTP(S)_PROXY / NO_PROXY settings through a real proxy."""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shoal._node.transport import Transport, TransportError

pytestmark = pytest.mark.timeout(60)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections alive

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        if self.path.startswith("/slow"):
            time.sleep(2.0)
        if self.path.startswith("/close"):
            self.close_connection = True
        body = f"{self.command} {self.path} {server.port_of(self)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Target", self.path)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0

    def port_of(self, handler: BaseHTTPRequestHandler) -> int:
        return int(handler.client_address[1])

    def get_request(self) -> tuple[socket.socket, object]:
        self.connections += 1
        return super().get_request()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(ssl.create_default_context(), 5.0, 10.0)
    yield t
    t.close()


def _url(srv: _Server, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.server_address[1]}{path}"


@pytest.mark.usefixtures("no_proxy_env")
def test_requests_share_one_kept_alive_connection(server: _Server, transport: Transport) -> None:
    t = transport
    answers = [t.request("GET", _url(server, f"/n{i}?q=1"), {}).content for i in range(5)]
    assert server.connections == 1
    ports = {a.split()[-1] for a in answers}
    assert len(ports) == 1, answers  # one client port: one connection
    assert answers[0].startswith(b"GET /n0?q=1 ")


@pytest.mark.usefixtures("no_proxy_env")
def test_a_connection_the_server_closed_while_idle_is_replaced_at_once(
    server: _Server, transport: Transport
) -> None:
    t = transport
    # The server ends the connection after answering, without saying so: the next
    # request finds it closed and goes again, at once, on a new one.
    t.request("GET", _url(server, "/close"), {})
    t.request("GET", _url(server, "/a"), {})
    assert server.connections == 2
    reply = t.request("POST", _url(server, "/again"), {}, b"payload")
    assert reply.status_code == 201 and reply.content == b"payload"


@pytest.mark.usefixtures("no_proxy_env")
def test_a_stale_kept_connection_is_retried_once_on_a_new_one(transport: Transport) -> None:
    # A server that answers one request per connection and then resets it, without
    # saying "Connection: close": the next request on that connection finds it dead.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.1)
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    t = transport
    assert t.request("GET", f"http://127.0.0.1:{port}/1", {}).content == b"ok"
    time.sleep(0.3)  # the server has reset it by now
    assert t.request("GET", f"http://127.0.0.1:{port}/2", {}).content == b"ok"
    assert len(accepted) == 2
    listener.close()


@pytest.mark.usefixtures("no_proxy_env")
def test_an_unreachable_server_is_a_transport_error(transport: Transport) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(TransportError, match="ConnectionRefused"):
        transport.request("GET", f"http://127.0.0.1:{port}/", {})


@pytest.mark.usefixtures("no_proxy_env")
def test_a_silent_server_times_out_within_the_request_timeout(
    server: _Server, transport: Transport
) -> None:
    t = transport
    start = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        t.request("GET", _url(server, "/slow"), {}, timeout_s=0.3)
    assert time.monotonic() - start < 1.5


@pytest.mark.usefixtures("no_proxy_env")
def test_bodies_stream_from_chunks_with_or_without_a_length(
    server: _Server, transport: Transport
) -> None:
    t = transport
    chunks = [b"a" * 70_000, b"b" * 5, b"c" * 1_000_000]
    sized = t.request(
        "POST", _url(server, "/sized"), {"Content-Length": str(sum(map(len, chunks)))},
        iter(chunks),
    )  # fmt: skip
    chunked = t.request("POST", _url(server, "/chunked"), {}, iter(chunks))
    assert sized.content == chunked.content == b"".join(chunks)


# ------------------------------------------------------------------------ proxies
class _Proxy(threading.Thread):
    """A forward proxy: CONNECT tunnels (https) and absolute-form requests (http)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[str] = []

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(65536)
        line = head.split(b"\r\n", 1)[0].decode()
        self.seen.append(line)
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
        else:
            hostport = target.split("/")[2]
            host, port = hostport.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            path = "/" + target.split("/", 3)[3]
            rest = head.replace(target.encode(), path.encode(), 1)
        if rest:
            upstream.sendall(rest)
        with client, upstream, contextlib.suppress(OSError):  # a reset ends the tunnel
            while select.select([client, upstream], [], [], 5.0)[0]:
                for end in select.select([client, upstream], [], [], 0)[0]:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is client else client).sendall(data)


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    p = _Proxy()
    p.start()
    yield p
    p.listener.close()


def test_http_goes_through_the_proxy_named_by_http_proxy(
    server: _Server,
    proxy: _Proxy,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    transport: Transport,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    reply = transport.request("POST", _url(server, "/via?x=1"), {}, b"hello")
    assert reply.content == b"hello" and reply.headers["X-Target"] == "/via?x=1"
    assert proxy.seen == [f"POST {_url(server, '/via?x=1')} HTTP/1.1"]


def test_no_proxy_bypasses_the_proxy(
    server: _Server,
    proxy: _Proxy,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    transport: Transport,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert transport.request("GET", _url(server, "/direct"), {}).status_code == 200
    assert proxy.seen == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_https_goes_through_a_connect_tunnel_of_the_https_proxy(
    proxy: _Proxy,
    no_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    transport: Transport,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    srv = _Server()
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    srv.socket = served.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        trusting = ssl.create_default_context(cafile=str(cert))
        with contextlib.closing(Transport(trusting, 5.0, 10.0)) as t:
            for i in range(3):
                assert t.request("GET", _url(srv, f"/tls{i}", "https"), {}).status_code == 200
        port = srv.server_address[1]
        assert [x.rsplit(" ", 1)[0] for x in proxy.seen] == [f"CONNECT 127.0.0.1:{port}"]  # kept
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            transport.request("GET", _url(srv, "/untrusted", "https"), {})
    finally:
        srv.shutdown()
        srv.server_close()
