"""A webhook endpoint inside the test process.

Records every request and answers from a per-path script (default 200):

    sink = WebhookSink(unix=True).start()
    sink.script("/hook", 503, Reply(429, {"Retry-After": "1"}), 200)
    ... ackd subscription with url=sink.url("/hook") or unix_socket=sink.unix_path
    requests = sink.wait_for(3, timeout=10)
    sink.close()

Beyond a fixed script, a responder decides per request (once the path's script
is used up): it sees the Request and returns a Reply or a status.

    sink.respond("/hook", lambda req: Reply(200, delay=random.uniform(0, 0.02)))

With tls=(cert_file, key_file, client_ca_file) the TCP listener speaks https
and, when client_ca_file is given, requires a client certificate signed by
it; Request.peer_cert then holds the client's certificate (ssl's dict form).

Each Request carries monotonic times: started (the body had arrived) and
answered (the delay was over and the answer was about to be sent), so tests
can tell which requests overlapped and what happened after an answer.
"""

import base64
import collections
import dataclasses
import hashlib
import hmac
import http.server
import os
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path


@dataclasses.dataclass
class Reply:
    """A scripted answer. delay holds the answer back (webhook timeouts)."""
    status: int = 200
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclasses.dataclass
class Request:
    method: str
    path: str              # without the query string
    query: dict            # {name: [values]}
    headers: object        # email.message.Message: case-insensitive get()
    body: bytes
    time: float            # time.time() when the body had arrived
    via: str               # "tcp" or "unix"
    status: int            # what the sink answered
    started: float = 0.0   # time.monotonic() when the body had arrived
    answered: float | None = None  # time.monotonic() just before the answer was sent
    peer_cert: dict | None = None  # the client's certificate over https

    def header(self, name):
        return self.headers.get(name)


def webhook_signature(secret, msg_id, timestamp, body):
    """Standard Webhooks "v1,<base64>" for a whsec_ secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # see WebhookSink.start()
        super().setup()

    def _handle(self):
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        arrived = time.time()
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        request = Request(self.command, url.path, urllib.parse.parse_qs(url.query),
                          self.headers, body, arrived, self.server.via, 0, started)
        if isinstance(self.connection, ssl.SSLSocket):
            request.peer_cert = self.connection.getpeercert()
        reply = sink.reply_for(request)
        request.status = reply.status
        sink.record(request)
        if reply.delay:
            time.sleep(reply.delay)  # a deliberately slow endpoint
        request.answered = time.monotonic()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format, *args):  # noqa: A002 (signature fixed by the base class)
        pass

    def address_string(self):
        return self.server.via


def _quiet_disconnects(server, request, client_address):
    """A client that went away mid-answer (a killed daemon) is expected in
    these tests; anything else is reported as socketserver does."""
    if isinstance(sys.exc_info()[1], ConnectionError):
        return
    socketserver.BaseServer.handle_error(server, request, client_address)


class _TCPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    via = "tcp"
    handle_error = _quiet_disconnects


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    via = "unix"
    handle_error = _quiet_disconnects

    def get_request(self):
        sock, _ = super().get_request()
        return sock, ("unix", 0)


class WebhookSink:
    def __init__(self, unix=False, tcp=True, tcp_port=0, tls=None):
        self.requests = []
        self._scripts = collections.defaultdict(collections.deque)
        self._responders = {}
        self._cond = threading.Condition()
        self._servers = []
        self._threads = []
        self._tmpdir = None
        self.port = None
        self.unix_path = None
        self._want_tcp = tcp
        self._tcp_port = tcp_port  # 0: any free port
        self._want_unix = unix
        self._tls = tls  # (cert_file, key_file, client_ca_file or None)
        self.handshake_failures = 0

    def start(self):
        if self._want_tcp:
            server = _TCPServer(("127.0.0.1", self._tcp_port), _Handler)
            self.port = server.server_address[1]
            if self._tls:
                # The handshake runs in the request's thread, where a refused
                # one reaches handle_error (accept() would drop it silently).
                server.socket = self._tls_context().wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False)
                server.handle_error = self._handshake_failed
            self._serve(server)
        if self._want_unix:
            self._tmpdir = tempfile.mkdtemp(prefix="ackd-sink-")
            self.unix_path = os.path.join(self._tmpdir, "hook.sock")
            self._serve(_UnixServer(self.unix_path, _Handler))
        return self

    def _serve(self, server):
        server.sink = self
        self._servers.append(server)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"webhook-sink-{server.via}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self):
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        if self._tmpdir is not None:
            Path(self.unix_path).unlink(missing_ok=True)
            os.rmdir(self._tmpdir)
            self._tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _tls_context(self):
        cert, key, client_ca = self._tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _handshake_failed(self, request, client_address):
        """A refused handshake: counted, so a test can see the attempt."""
        if isinstance(sys.exc_info()[1], ssl.SSLError):
            with self._cond:
                self.handshake_failures += 1
                self._cond.notify_all()
            return
        _quiet_disconnects(None, request, client_address)

    def url(self, path="/hook"):
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # --- script and record -----------------------------------------------

    def script(self, path, *replies):
        """Queue answers for path: each an int status or a Reply. When the queue
        is empty the sink answers 200."""
        with self._cond:
            for r in replies:
                self._scripts[path].append(r if isinstance(r, Reply) else Reply(int(r)))

    def respond(self, path, responder):
        """Answer requests to path with responder(request) -> Reply or int status
        once its script is used up; None removes the responder."""
        with self._cond:
            if responder is None:
                self._responders.pop(path, None)
            else:
                self._responders[path] = responder

    def next_reply(self, path):
        with self._cond:
            queue = self._scripts.get(path)
            return queue.popleft() if queue else Reply()

    def reply_for(self, request):
        """The script's next answer for the request's path, else the
        responder's, else 200."""
        with self._cond:
            queue = self._scripts.get(request.path)
            if queue:
                return queue.popleft()
            responder = self._responders.get(request.path)
        if responder is None:
            return Reply()
        reply = responder(request)
        return reply if isinstance(reply, Reply) else Reply(int(reply))

    def record(self, request):
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def received(self, path=None):
        with self._cond:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, count, timeout=10, path=None):
        """Block until at least count requests (to path, if given) arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"webhook sink: {len(got)} of {count} requests "
                                       f"after {timeout}s")
                self._cond.wait(left)
