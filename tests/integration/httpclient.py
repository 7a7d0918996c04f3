"""A small HTTP client for ackd's two listeners: TCP and the Unix socket.

    client = HttpClient(port=8470)            # or HttpClient(unix_path="/x.sock")
    r = client.request("POST", "/v1/topics/t", body=b"v", headers={...})
    r.status, r.headers["content-type"], r.body, r.json()
"""

import dataclasses
import http.client
import json
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage  # case-insensitive lookups
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)


class HttpClient:
    def __init__(self, port=None, unix_path=None, host="127.0.0.1", timeout=10):
        if (port is None) == (unix_path is None):
            raise ValueError("give exactly one of port and unix_path")
        self.port = port
        self.unix_path = unix_path
        self.host = host
        self.timeout = timeout

    def __repr__(self):
        where = self.unix_path if self.unix_path else f"{self.host}:{self.port}"
        return f"HttpClient({where})"

    def connection(self, timeout=None):
        timeout = timeout or self.timeout
        if self.unix_path is not None:
            return UnixHTTPConnection(self.unix_path, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=None):
        """One request on a fresh connection; returns a Response."""
        if isinstance(body, str):
            body = body.encode()
        elif body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.reason, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=b"", **kwargs):
        return self.request("POST", path, body=body, **kwargs)
