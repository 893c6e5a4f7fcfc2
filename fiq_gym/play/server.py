"""``fiq-gym serve``: play the shopper (or watch the simulated one) in a browser.

A deliberately small server on the standard library (``http.server``): one plain page, its
script and style sheet, a JSON API, and garment pictures as PNG. It binds to 127.0.0.1 by
default and is meant for one researcher's machine, not the internet.

API (all answers are JSON, errors are ``{"error": "message"}`` with a 4xx status):

========  =================================  ================================================
method    path                               what
========  =================================  ================================================
GET       ``/api/health``                    agent name, catalog size
POST      ``/api/sessions``                  new session ``{"mode": "human"|"watch",
                                             "target": ID|INDEX|null}`` -> 201, its state
GET       ``/api/sessions/{id}``             the session's state (a reloaded page resumes)
POST      ``/api/sessions/{id}/feedback``    ``{"caption": "..."}``: the person's feedback
POST      ``/api/sessions/{id}/advance``     watch mode: play one turn
POST      ``/api/sessions/{id}/reset``       ``{"target": ID|INDEX|null}``: new dialog
GET       ``/api/sessions/{id}/dialogs``     the session's dialogs as a dialog file (download)
GET       ``/api/images/{row}.png``          a garment picture (catalog row)
========  =================================  ================================================

Requests are checked before they reach a session: POST bodies must be JSON objects
(``Content-Type: application/json``, at most :data:`MAX_BODY_BYTES`; 411 without a length,
413 above it, 415 for another type, 400 for malformed JSON, unknown fields or wrong types),
unknown sessions are 404, actions the dialog's state does not allow are 409. On a loopback
address the ``Host`` header must name it (403 otherwise), which keeps web pages on other
sites from reaching the server through DNS rebinding. The page shows everything a person
typed with ``textContent``, never as HTML, and is served with a strict
Content-Security-Policy.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sys
import threading
import traceback
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from fiq_gym.play.agent import PlayAgent
from fiq_gym.play.images import garment_image, png_bytes
from fiq_gym.play.record import dialogs_document
from fiq_gym.play.session import MODES, PlaySession, SessionStateError

__all__ = ["MAX_BODY_BYTES", "PlayServer"]

MAX_BODY_BYTES = 16 * 1024
_DRAIN_LIMIT = 1024 * 1024
_SESSION = re.compile(r"^/api/sessions/([A-Za-z0-9_-]{1,64})(/[a-z]+)?$")
_IMAGE = re.compile(r"^/api/images/(\d{1,9})\.png$")
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class HTTPError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("fiq_gym.play").joinpath("static", name).read_bytes()


def _fields(body: dict[str, Any], allowed: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise HTTPError(400, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    for key, value in body.items():
        kinds = allowed[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise HTTPError(400, f"field {key!r} must be {names}, got {json.dumps(value)[:60]}")
    return body


_TARGET = (str, int, type(None))


class PlayServer:
    """The web front end: sessions keyed by id, each a :class:`PlaySession`.

    Args:
        agent: the retriever every session plays against (loaded once, shared read-only).
        host, port: where to listen; ``port=0`` picks a free port (see :attr:`url`).
        save_path: every finished dialog of every session is added to this JSON file.
        seed: seeds the sessions' deals (session k uses ``seed + k``); None: fresh each time.
        max_sessions: the least recently used session is closed beyond this many.
        quiet: do not log requests to stderr.
        request_timeout: seconds a client may take to send a request's headers or body; a
            stalled body is answered with 408.
    """

    def __init__(
        self,
        agent: PlayAgent,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        save_path: str | None = None,
        seed: int | None = None,
        max_sessions: int = 32,
        quiet: bool = True,
        request_timeout: float = 30.0,
    ) -> None:
        self.agent = agent
        self.save_path = save_path
        self.seed = seed
        self.max_sessions = max_sessions
        self.quiet = quiet
        self.sessions: OrderedDict[str, PlaySession] = OrderedDict()
        self._lock = threading.Lock()
        self._count = 0
        handler = type("PlayHandler", (_Handler,), {"app": self, "timeout": float(request_timeout)})
        self.httpd = _Server((host, port), handler)
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._image = functools.lru_cache(maxsize=2048)(self._render_image)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # --- lifecycle -----------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> PlayServer:
        """Serve from a background thread (for tests and notebooks); stop with :meth:`close`."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fiq-gym-serve", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        with self._lock:
            for session in self.sessions.values():
                session.close()
            self.sessions.clear()

    def __enter__(self) -> PlayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sessions ------------------------------------------------------------------------------
    def create_session(self, mode: str, target: int | str | None) -> tuple[str, PlaySession]:
        if mode not in MODES:
            raise HTTPError(400, f"field 'mode' must be one of {list(MODES)}, got {json.dumps(mode)[:40]}")
        with self._lock:
            seed = None if self.seed is None else self.seed + self._count
            self._count += 1
        session = PlaySession(self.agent, mode=mode, seed=seed, save_path=self.save_path)
        try:
            session.new_dialog(target)
        except ValueError as e:
            session.close()
            raise HTTPError(400, str(e)) from None
        sid = secrets.token_urlsafe(12)
        with self._lock:
            self.sessions[sid] = session
            while len(self.sessions) > self.max_sessions:
                _, old = self.sessions.popitem(last=False)
                old.close()
        return sid, session

    def session(self, sid: str) -> PlaySession:
        with self._lock:
            session = self.sessions.get(sid)
            if session is None:
                raise HTTPError(404, f"unknown session {sid!r}; start a new one (it may have expired)")
            self.sessions.move_to_end(sid)
            return session

    def image(self, row: int) -> bytes:
        if not 0 <= row < len(self.agent.catalog):
            raise HTTPError(404, f"no garment at row {row}")
        return self._image(row)

    def _render_image(self, row: int) -> bytes:
        return png_bytes(garment_image(self.agent.catalog, row))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 made the kernel drop 1-15% of connections when 20
    # browsers (or a classroom) connected at once; the kernel caps this at somaxconn anyway.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that drops a connection (e.g. an image it no longer needs) is no error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    app: PlayServer
    server_version = "fiq-gym"
    sys_version = ""
    timeout = 30  # seconds a client may take to send a request

    # --- plumbing ------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        if not self.app.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8", extra)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message}, extra)

    def _check_host(self) -> None:
        if self.app.host not in _LOOPBACK:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        allowed = {f"{h}:{self.app.port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        if host not in allowed:
            raise HTTPError(403, f"unexpected Host header {host!r}; open {self.app.url}")

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(411, "a POST needs a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {length!r}") from None
        if size < 0:
            raise HTTPError(400, f"bad Content-Length {length!r}")
        if size > MAX_BODY_BYTES:
            # Drain a moderately oversized body so the client reads the answer rather than a
            # reset connection; do not read a huge one at all.
            remaining = size if size <= _DRAIN_LIMIT else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
            self.close_connection = True
            raise HTTPError(413, f"request body of {size} bytes is too large; the limit is {MAX_BODY_BYTES}")
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            raw = self.rfile.read(size)
        except TimeoutError:
            # A client that announced a body and stopped sending it: answer and hang up
            # rather than hold a thread, and log one line instead of a traceback.
            self.close_connection = True
            BaseHTTPRequestHandler.log_message(  # logged even when quiet: it is a client error
                self,
                '"%s" 408: the request body (%d bytes announced) stalled for %g s',
                self.requestline,
                size,
                self.timeout,
            )
            raise HTTPError(
                408, f"the request body stalled: sent less than its {size} bytes within {self.timeout:g} s"
            ) from None
        if kind != "application/json":
            raise HTTPError(415, f"send JSON (Content-Type: application/json), not {kind or 'nothing'!r}")
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HTTPError(400, f"malformed JSON body: {e}") from None
        except RecursionError:
            raise HTTPError(400, "malformed JSON body: nested too deeply") from None
        if not isinstance(data, dict):
            raise HTTPError(400, f"the body must be a JSON object, got {type(data).__name__}")
        return data

    def _dispatch(self, method: str) -> None:
        try:
            self._check_host()
            path = self.path.split("?", 1)[0]
            self._route(method, path)
        except HTTPError as e:
            self._error(e.status, e.message)
        except SessionStateError as e:
            self._error(409, str(e))
        except ValueError as e:
            self._error(400, str(e))
        except Exception:  # pragma: no cover - reported to the client without details
            traceback.print_exc(file=sys.stderr)
            self._error(500, "internal error; see the server's log")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _other(self) -> None:
        self._error(405, f"method {self.command} is not allowed", {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The library's own errors (a method with no handler, a malformed request line, a
        too-long header) as the JSON every other answer is, not its HTML page."""
        self.close_connection = True
        if code == 501 and self.command:  # http.server's answer to a method it has no do_ for
            self._error(405, f"method {self.command} is not allowed", {"Allow": "GET, HEAD, POST"})
            return
        short = self.responses.get(code, ("error",))[0]
        self._error(code, message or short, {"Connection": "close"})

    # --- routes --------------------------------------------------------------------------------
    def _method(self, method: str, allowed: str) -> None:
        if method != allowed:
            self.close_connection = True
            raise _MethodError(allowed)

    def _route(self, method: str, path: str) -> None:
        app = self.app
        try:
            self._route_inner(method, path, app)
        except _MethodError as e:
            self._error(405, f"{path} takes {e.allowed}", {"Allow": e.allowed})

    def _route_inner(self, method: str, path: str, app: PlayServer) -> None:
        if path in _STATIC:
            self._method(method, "GET")
            name, kind = _STATIC[path]
            extra = {"Content-Security-Policy": _CSP} if name == "index.html" else None
            self._send(200, _static(name), kind, extra)
            return
        if path == "/favicon.ico":
            self._method(method, "GET")
            self._send(204, b"", "image/x-icon")
            return
        if path == "/api/health":
            self._method(method, "GET")
            self._json(200, {"ok": True, "agent": app.agent.name, "num_items": len(app.agent.catalog)})
            return
        if path == "/api/sessions":
            self._method(method, "POST")
            body = _fields(self._body(), {"mode": (str,), "target": _TARGET})
            sid, session = app.create_session(body.get("mode", "human"), body.get("target"))
            self._json(201, {"session": sid, **session.state()})
            return
        m = _IMAGE.match(path)
        if m:
            self._method(method, "GET")
            png = app.image(int(m.group(1)))
            self._send(200, png, "image/png", {"Cache-Control": "max-age=3600"})
            return
        m = _SESSION.match(path)
        if not m:
            raise HTTPError(404, f"no such page: {path}")
        sid, action = m.group(1), m.group(2) or ""
        if action == "":
            self._method(method, "GET")
            session = app.session(sid)
            self._json(200, {"session": sid, **session.state()})
        elif action == "/feedback":
            self._method(method, "POST")
            body = _fields(self._body(), {"caption": (str,)})
            if "caption" not in body:
                raise HTTPError(400, "missing field 'caption'")
            session = app.session(sid)
            self._json(200, {"session": sid, **session.submit(body["caption"])})
        elif action == "/advance":
            self._method(method, "POST")
            _fields(self._body(), {})
            session = app.session(sid)
            self._json(200, {"session": sid, **session.advance()})
        elif action == "/reset":
            self._method(method, "POST")
            body = _fields(self._body(), {"target": _TARGET})
            session = app.session(sid)
            self._json(200, {"session": sid, **session.new_dialog(body.get("target"))})
        elif action == "/dialogs":
            self._method(method, "GET")
            session = app.session(sid)
            data = json.dumps(dialogs_document(session.dialogs()), indent=2).encode("utf-8")
            self._send(
                200,
                data,
                "application/json; charset=utf-8",
                {"Content-Disposition": 'attachment; filename="fiq-gym-dialogs.json"'},
            )
        else:
            raise HTTPError(404, f"no such page: {path}")


class _MethodError(Exception):
    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed
