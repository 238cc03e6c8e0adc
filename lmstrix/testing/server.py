"""The HTTP layer: a stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive.

Why these details:
- ``disable_nagle_algorithm`` and one ``write`` per JSON reply: without them a keep-alive client
  waits ~40 ms per request on Nagle + delayed ACK, and hundreds of requests/s become 25.
- Streams use chunked transfer encoding so the connection stays reusable after ``[DONE]``.
- Own accept loop woken by a socketpair, so ``stop()`` returns in milliseconds instead of waiting
  for ``serve_forever``'s poll interval; open keep-alive sockets are shut down on stop, so a
  stopped emulator really stops answering.
"""

from __future__ import annotations

import contextlib
import email.utils
import selectors
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lmstrix.testing.app import EmulatorApp
from lmstrix.testing.protocol import JsonReply, Request, StreamReply
from lmstrix.testing.state import Stopped

_COMMON_HEADERS = "X-Powered-By: Express\r\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.accepted = 0  # connections opened by clients since start
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a cancelled stream, a benchmark's closed pool) is normal
        traffic for an LM Studio server, not an error worth a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            self.server.accepted += 1

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: tests and the demo print what matters themselves."""

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        body = self._read_body()
        request = Request(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=self.headers,  # type: ignore[arg-type]  # case-insensitive mapping
            body=body,
        )
        try:
            reply = self.server.app.handle(request)
        except Stopped:
            self.close_connection = True
            return
        except Exception as exc:  # an emulator bug: say so instead of dropping the socket
            reply = JsonReply(500, {"error": f"Internal emulator error: {exc!r}"})
        if isinstance(reply, StreamReply):
            self._send_stream(reply)
        else:
            self._send_json(reply)

    def _head(self, status: int, headers: dict[str, str]) -> str:
        lines = [_status_line(status), _COMMON_HEADERS]
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}\r\n")
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if self.close_connection:
            lines.append("Connection: close\r\n")
        else:
            lines.append("Connection: keep-alive\r\n")
        return "".join(lines) + "\r\n"

    def _send_json(self, reply: JsonReply) -> None:
        payload = reply.payload()
        headers = {
            **reply.headers,
            "Content-Type": reply.content_type,
            "Content-Length": str(len(payload)),
        }
        head = self._head(reply.status, headers).encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + payload)

    def _send_stream(self, reply: StreamReply) -> None:
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "Transfer-Encoding": "chunked",
        }
        frames = reply.frames
        try:
            self.wfile.write(self._head(reply.status, headers).encode("latin-1"))
            for frame in frames:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.write(b"0\r\n\r\n")
        except (Stopped, OSError):
            self.close_connection = True  # client went away, or the emulator stopped
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class HTTPServerThread:
    """Owns the listening socket and its accept loop thread."""

    def __init__(self, app: EmulatorApp, host: str, port: int) -> None:
        self._server = _Server((host, port), app)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="lmstudio-emulator", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def accepted(self) -> int:
        """Connections clients opened so far."""
        return self._server.accepted

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._server.handle_request()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.server_close()
        self._server.drop_connections()
        self._wake_r.close()
        self._wake_w.close()
