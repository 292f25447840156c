"""A recording HTTP proxy in front of a real registry, for tests that must
see or disturb what a client sends: every request is logged (method, path,
Range header); a response body can be cut after N bytes (the connection
closed mid-blob), or held after N bytes until the test releases it (to kill
a daemon mid-pull).

The client talks to the proxy as if it were the registry (its address is
the registry host in the image reference). The registry sees the proxy's
address as the Host, so the upload locations it hands out lead back
through the proxy too.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate"}


@dataclass
class Seen:
    method: str
    path: str
    range: str
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class RegistryProxy:
    """`RegistryProxy(upstream_host)`; `.host` is its own `127.0.0.1:port`.

    cut:  (path substring, n): the first GET whose path holds the substring
          gets its full headers and only n body bytes, then the connection
          is closed.
    hold: (path substring, n): the first such GET sends n body bytes, sets
          `held`, and waits for `release` before sending the rest.
    """

    def __init__(self, upstream: str, cut: tuple[str, int] | None = None, hold: tuple[str, int] | None = None):
        self.upstream = upstream
        self.cut, self.hold = cut, hold
        self.seen: list[Seen] = []
        self.cuts = 0
        self.held, self.release = threading.Event(), threading.Event()
        self.resolved = threading.Event()  # set on every HEAD of a manifest
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                proxy._forward(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, fragment: str) -> list[Seen]:
        """The GETs whose path holds `fragment`."""
        with self._lock:
            return [s for s in self.seen if s.method == "GET" and fragment in s.path]

    def _take(self, which: str, path: str, method: str) -> int | None:
        """The byte count of a one-shot fault for this request, if it applies."""
        with self._lock:
            rule = getattr(self, which)
            if method != "GET" or not rule or rule[0] not in path:
                return None
            setattr(self, which, None)
            return rule[1]

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", "0") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.seen.append(Seen(h.command, h.path, h.headers.get("Range", ""),
                                  {k.lower(): v for k, v in h.headers.items()}))
        if h.command == "HEAD" and "/manifests/" in h.path:
            self.resolved.set()
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP]
        cut = self._take("cut", h.path, h.command)
        hold = self._take("hold", h.path, h.command)
        req = self._client.build_request(h.command, f"http://{self.upstream}{h.path}", headers=headers,
                                         content=body if body or h.command in ("POST", "PUT", "PATCH") else None)
        resp = self._client.send(req, stream=True)
        try:
            h.send_response_only(resp.status_code, resp.reason_phrase)
            for k, v in resp.headers.multi_items():
                if k.lower() not in HOP_BY_HOP:
                    h.send_header(k, v)
            h.end_headers()
            if h.command == "HEAD":
                return
            sent = 0
            for chunk in resp.iter_raw():
                if cut is not None and sent + len(chunk) >= cut:
                    h.wfile.write(chunk[:cut - sent])
                    h.wfile.flush()
                    with self._lock:
                        self.cuts += 1
                    h.close_connection = True
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                if hold is not None and sent + len(chunk) >= hold:
                    h.wfile.write(chunk[:hold - sent])
                    h.wfile.flush()
                    self.held.set()
                    self.release.wait(120)
                    chunk, sent = chunk[hold - sent:], hold
                    hold = None
                h.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        finally:
            resp.close()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
