"""The HTTP client behind webhook delivery (docs/webhooks.md, "The HTTP
client"): answers framed every way HTTP/1.x allows, connections the endpoint
closes, answers that are not HTTP, and the http_client option.

The endpoint here is a raw socket server, so that each test decides the
exact bytes of every answer and when a connection closes. The sinks listen
on 127.0.0.1, so with http_client "auto" ackd's own client talks to them; a
run with ACKD_TEST_HTTP_CLIENT=libcurl checks that libcurl does the same.
"""

import os
import select
import socket
import threading
import time

from test_webhook import (DELIVERY_TIMEOUT, new_topic, produce_all, start_ackd, subscription,
                          wait_committed)


class RawRequest:
    def __init__(self, conn, head, body):
        self.conn = conn  # which connection it came on, 0 for the first accepted
        self.head = head
        self.body = body
        lines = head.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        self.headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()

    def header(self, name):
        return self.headers.get(name.lower())


class RawSink:
    """An HTTP endpoint on 127.0.0.1 that answers each request with the bytes
    answer(request, n) returns (n: the request's number on its connection,
    0 first), closing the connection after it when close(request, n) says
    so. With kill_reused, a connection that carried one answer is closed
    without reading as soon as the next request arrives on it: what an
    endpoint's idle timeout does when a request races it."""

    def __init__(self, answer, close=lambda req, n: False, kill_reused=False):
        self.answer = answer
        self.close_after = close
        self.kill_reused = kill_reused
        self.requests = []
        self.connections = 0
        self.killed = 0
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._cond:
                index = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn, index):
        buf = b""
        n = 0
        try:
            while True:
                if n > 0 and self.kill_reused:
                    select.select([conn], [], [], 30)
                    with self._cond:
                        self.killed += 1
                    return  # closed unread: the peer sees a reset
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                req = RawRequest(index, head, b"")
                length = int(req.header("content-length") or 0)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                req.body, buf = buf[:length], buf[length:]
                with self._cond:
                    self.requests.append(req)
                    self._cond.notify_all()
                conn.sendall(self.answer(req, n))
                if self.close_after(req, n):
                    return
                n += 1
        except OSError:
            return
        finally:
            conn.close()

    def received(self):
        with self._cond:
            return list(self.requests)

    def wait_for(self, count, timeout=DELIVERY_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"raw sink: {len(self.requests)} of {count} requests")
                self._cond.wait(left)
            return list(self.requests)


OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

# The run's client for subscriptions that do not name one (ackd_proc.py).
LIBCURL = os.environ.get("ACKD_TEST_HTTP_CLIENT") == "libcurl"


def deliver(kafka, ackd, sink, count, **overrides):
    """count messages on a new one-partition topic through ackd to sink; the
    requests once the offsets are committed."""
    topic = new_topic(kafka)
    sub = subscription(topic, sink, **overrides)
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"m{i}".encode()} for i in range(count)])
    wait_committed(kafka, sub["group"], topic, {0: count}, timeout=DELIVERY_TIMEOUT)
    return sink.received()


def bodies(reqs):
    return sorted(r.body for r in reqs)


def test_chunked_answers_keep_the_connection(kafka, ackd):
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4;ext=1\r\nfine\r\n6\r\n, done\r\n0\r\nX-Trailer: t\r\n\r\n")
    with RawSink(lambda req, n: answer) as sink:
        got = deliver(kafka, ackd, sink, 30)
        assert bodies(got) == sorted(f"m{i}".encode() for i in range(30))
        assert {r.header("ackd-attempt") for r in got} == {"1"}
        assert sink.connections == 1, "one partition, one connection, kept alive"


def test_http10_answers_delimited_by_the_close(kafka, ackd):
    answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body ends at the close"
    with RawSink(lambda req, n: answer, close=lambda req, n: True) as sink:
        got = deliver(kafka, ackd, sink, 10)
        assert bodies(got) == sorted(f"m{i}".encode() for i in range(10))
        assert {r.header("ackd-attempt") for r in got} == {"1"}
        assert sink.connections == 10, "each answer ends its connection"


def test_a_connection_closed_while_kept_is_retried_on_a_new_one(kafka, ackd):
    # Every request after the first on a connection meets its close: ackd's
    # client sends it once more on a new connection within the same attempt.
    # libcurl does so only for some ways the connection ends (an EOF, not a
    # reset): there such an attempt may fail and the next one deliver.
    with RawSink(lambda req, n: OK_EMPTY, kill_reused=True) as sink:
        topic = new_topic(kafka)
        sub = subscription(topic, sink)
        start_ackd(ackd, sub)
        for i in range(8):
            produce_all(kafka, topic, [{"value": f"m{i}".encode()}])
            sink.wait_for(i + 1)
            # Let the connection go idle before the next message, so the
            # next request goes out on it.
            time.sleep(0.05)
        wait_committed(kafka, sub["group"], topic, {0: 8}, timeout=DELIVERY_TIMEOUT)
        got = sink.received()
        assert bodies(got) == sorted(f"m{i}".encode() for i in range(8)), \
            "each message answered exactly once"
        if not LIBCURL:
            assert {r.header("ackd-attempt") for r in got} == {"1"}, "no attempt was counted"
            assert sink.connections == 8
        assert sink.killed >= 7


def test_an_answer_that_is_not_http_is_retried(kafka, ackd):
    def answer(req, n):
        if req.header("ackd-attempt") == "1":
            return b"garbage, not HTTP at all\r\n\r\n"
        return OK_EMPTY

    def close(req, n):
        return req.header("ackd-attempt") == "1"

    with RawSink(answer, close=close) as sink:
        got = deliver(kafka, ackd, sink, 5)
        attempts = sorted((r.body, r.header("ackd-attempt")) for r in got)
        assert attempts == sorted([(f"m{i}".encode(), a) for i in range(5) for a in ("1", "2")])


def test_bad_status_lines_and_huge_headers_are_retried(kafka, ackd):
    # (libcurl 7.88 takes "HTTP/2 200" on an HTTP/1.1 connection as an
    # answer; ackd's client does not: tests/unit/test_webhook_h1.c.)
    bad = [b"HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n",
           b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 200000 + b"\r\n\r\n"]

    def answer(req, n):
        attempt = int(req.header("ackd-attempt"))
        return bad[attempt - 1] if attempt <= len(bad) else OK_EMPTY

    def close(req, n):
        return int(req.header("ackd-attempt")) <= len(bad)

    with RawSink(answer, close=close) as sink:
        got = deliver(kafka, ackd, sink, 1)
        assert [r.header("ackd-attempt") for r in got] == ["1", "2", "3"]


def test_http_client_option(kafka, ackd):
    # libcurl adds "Accept: */*"; ackd's own client sends only what
    # docs/webhooks.md lists.
    with RawSink(lambda req, n: OK_EMPTY) as sink:
        topic = new_topic(kafka)
        subs = [subscription(topic, sink, name=f"hook-{client}", group=f"grp-{topic}-{client}",
                             url=sink.url(f"/{client}?x=1"), http_client=client)
                for client in ("auto", "libcurl")]
        start_ackd(ackd, *subs)
        produce_all(kafka, topic, [{"value": b"one"}])
        got = sink.wait_for(2)
        by_path = {r.request_line.split()[1]: r for r in got}
        assert set(by_path) == {"/auto?x=1", "/libcurl?x=1"}
        lean, curl = by_path["/auto?x=1"], by_path["/libcurl?x=1"]
        assert curl.header("accept") == "*/*"
        assert lean.header("accept") is None
        assert lean.request_line == "POST /auto?x=1 HTTP/1.1"
        assert lean.header("host") == f"127.0.0.1:{sink.port}"
        assert curl.header("host") == lean.header("host")
        # The same headers apart from Accept and the per-attempt timestamp.
        skip = {"accept", "webhook-timestamp"}
        assert ({k for k in lean.headers if k not in skip} ==
                {k for k in curl.headers if k not in skip})
        assert lean.body == curl.body == b"one"
