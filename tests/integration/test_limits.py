"""Request limits: header count and size (431), request target length (414)
and open connections (503), each refused with the error shape; the probes
answered beyond max_connections; the cap per client address, which applies
to a listener that is not on loopback; the operations endpoints behind tokens with
auth.protect_ops; and the secure default that refuses a non-loopback
listener without tokens."""

import json
import socket
import subprocess
import time
import uuid

import pytest

from ackd_proc import Ackd
from kafka import wait_until
from test_hostile import exchange, one_answer

MAX_QUERY_ARGS = 100  # daemon/http.c
LIMITS = {"limits": {"max_header_bytes": 2048, "max_url_bytes": 512, "max_connections": 4}}


def assert_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_too_many_headers_get_431(ackd):
    daemon = ackd(config=LIMITS)
    headers = {f"X-H{i}": "v" for i in range(101)}
    assert_error(daemon.http.post("/v1/topics/t", b"x", headers=headers), 431,
                 "header_fields_too_large")
    # 90 small headers are fine: the request goes on to the topic check.
    r = daemon.http.post("/v1/topics/t", b"x",
                         headers={f"X-H{i}": "v" for i in range(90)})
    assert r.status != 431, r.body


def test_headers_over_max_header_bytes_get_431(ackd):
    daemon = ackd(config=LIMITS)
    r = daemon.http.post("/v1/topics/t", b"x", headers={"X-Big": "a" * 2100})
    assert_error(r, 431, "header_fields_too_large")
    assert "2048" in r.json()["error"]["message"]
    r = daemon.unix.post("/v1/topics/t", b"x", headers={"X-Big": "a" * 2100})
    assert_error(r, 431, "header_fields_too_large")


def test_request_target_over_max_url_bytes_gets_414(ackd):
    daemon = ackd(config=LIMITS)
    r = daemon.http.post("/v1/topics/t?key=" + "k" * 600, b"x")
    assert_error(r, 414, "uri_too_long")
    assert "512" in r.json()["error"]["message"]
    r = daemon.http.get("/healthz?pad=" + "p" * 600)
    assert_error(r, 414, "uri_too_long")
    assert daemon.http.get("/healthz?pad=short").status == 200


def request_at_limits(topic, over=0):
    """A POST whose request target and header fields are exactly at the default
    limits.max_url_bytes (8192) and limits.max_header_bytes (16384), counted as
    ackd counts them (the path, and name + value + 2 per query argument and
    per header field), in 100 fields; over adds bytes to the last field."""
    path = f"/v1/topics/{topic}"
    key = "k" * (8192 - len(path) - len("key") - 2)
    body = b"at the limits"
    fields = [("Host", "x"), ("Content-Length", str(len(body))), ("Connection", "close")]
    room = 16384 - sum(len(n) + len(v) + 2 for n, v in fields)
    pads = 100 - len(fields)
    for i in range(pads):
        name = f"X-Pad-{i:02d}"
        size = room // pads if i < pads - 1 else room - (room // pads) * (pads - 1)
        fields.append((name, "v" * (size - len(name) - 2 + (over if i == pads - 1 else 0))))
    assert sum(len(n) + len(v) + 2 for n, v in fields) == 16384 + over
    head = f"POST {path}?key={key} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    return (head + "\r\n").encode() + body, key.encode(), body


def test_request_at_both_default_limits_is_served_and_one_byte_over_refused(ackd, kafka):
    # libmicrohttpd holds a request in a fixed amount of memory per connection:
    # ackd sizes it so that one at its limits is served, and one just over
    # them is answered by ackd itself.
    daemon = ackd()
    topic = f"limits-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic)
    request, key, body = request_at_limits(topic)
    # Not half-closed: a client that shuts its side is gone before Kafka answers.
    status, _, answer = one_answer(exchange(daemon, request, timeout=30, half_close=False))
    assert status == 200, answer
    records = kafka.read_topic(topic)
    assert [(r.key, r.value) for r in records] == [(key, body)]
    request, _, _ = request_at_limits(topic, over=1)
    status, _, answer = one_answer(exchange(daemon, request, half_close=False))
    assert status == 431, answer
    assert json.loads(answer)["error"]["code"] == "header_fields_too_large"
    assert "16384" in json.loads(answer)["error"]["message"]


def with_arguments(request, n):
    """request_at_limits()'s request with n more query arguments ("&a=", each
    3 bytes as sent and as ackd counts), its key shorter by as much: still
    at both limits."""
    head, rest = request.split(b" HTTP/1.1\r\n", 1)
    path, key = head.split(b"?key=", 1)
    key = key[:len(key) - 3 * n]
    return path + b"?key=" + key + b"&a=" * n + b" HTTP/1.1\r\n" + rest, key


def test_every_request_within_the_limits_is_answered(ackd, kafka):
    # libmicrohttpd keeps the head and an entry per header field and query
    # argument in a fixed block per connection, and builds the answer's head
    # there too: a request ackd takes must leave room for that, or the record
    # is published and the client never hears of it.
    daemon = ackd()
    topic = f"limits-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic)
    request, _, _ = request_at_limits(topic)
    answered = []
    for n in range(MAX_QUERY_ARGS):  # the key is one argument
        req, key = with_arguments(request, n)
        status, _, answer = one_answer(exchange(daemon, req, timeout=30, half_close=False))
        assert status == 200, (n, answer)
        answered.append(key)
    assert sorted(r.key for r in kafka.read_topic(topic)) == sorted(answered)
    req, _ = with_arguments(request, MAX_QUERY_ARGS)
    status, _, answer = one_answer(exchange(daemon, req, half_close=False))
    assert status == 414, answer
    assert "query arguments" in json.loads(answer)["error"]["message"]


def test_cookies_count_with_the_headers_and_trailers_are_refused(ackd, kafka):
    # libmicrohttpd keeps an entry per cookie and a copy of the Cookie header
    # in the same block as the headers: cookies count as header fields, the
    # Cookie header's bytes twice. Trailer fields after a chunked body, which
    # it keeps whitespace and all, are refused before anything is published.
    daemon = ackd(config=LIMITS)  # max_header_bytes 2048
    topic = f"limits-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic)
    fields = [("Host", "x"), ("Content-Length", "1"), ("Connection", "close")]
    counted = sum(len(n) + len(v) + 2 for n, v in fields)

    def publish(cookie):
        head = "".join(f"{n}: {v}\r\n" for n, v in fields + [("Cookie", cookie)])
        raw = exchange(daemon, f"POST /v1/topics/{topic} HTTP/1.1\r\n{head}\r\nx".encode(),
                       half_close=False)
        return one_answer(raw)

    def cookies(n):
        return "; ".join(f"c{i}=" for i in range(n))

    assert publish(cookies(96))[0] == 200  # 4 header fields and 96 cookies
    status, _, answer = publish(cookies(97))
    assert status == 431 and "cookies" in json.loads(answer)["error"]["message"], answer
    room = 2048 - counted - len("Cookie") - 2  # for the value, counted twice
    value = "a=" + "v" * (room // 2 - 2)
    assert publish(value)[0] == 200
    assert publish(value + "vv")[0] == 431

    def chunked(trailer):
        head = "Host: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        return exchange(daemon, (f"POST /v1/topics/{topic} HTTP/1.1\r\n{head}\r\n"
                                 f"1\r\nx\r\n0\r\n{trailer}\r\n").encode(), half_close=False)

    assert one_answer(chunked(""))[0] == 200
    for trailer in ["T: v\r\n", f"T:{' ' * 4000}v\r\n"]:
        status, _, answer = one_answer(chunked(trailer))
        assert status == 431 and "trailer" in json.loads(answer)["error"]["message"], answer
    assert len(kafka.read_topic(topic)) == 3


def test_the_request_target_is_measured_as_sent(ackd):
    # A percent-escape takes three bytes of the target (and of libmicrohttpd's
    # block) for the one byte it stands for.
    daemon = ackd(config=LIMITS)
    prefix = "/healthz?pad="
    escaped = prefix + "%41" * ((512 - len(prefix)) // 3)
    assert len(escaped) <= 512 and daemon.http.get(escaped).status == 200
    over = escaped + "%41"
    assert len(over) > 512  # 185 bytes decoded
    assert_error(daemon.http.get(over), 414, "uri_too_long")


def test_query_arguments_beyond_the_block_close_the_connection(ackd):
    # Thousands of arguments (6 KB, under max_url_bytes as sent) do not fit
    # libmicrohttpd's block at all: it gives up on the request, before ackd
    # handles it, with its own error or (0.9.75) by closing the connection.
    # The daemon is unharmed.
    daemon = ackd()
    target = "/healthz?" + "&".join("a" for _ in range(3000))
    started = time.monotonic()
    raw = exchange(daemon, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                   timeout=10, half_close=False)
    assert time.monotonic() - started < 5
    assert raw == b"" or 400 <= one_answer(raw)[0] < 500, raw[:200]
    assert daemon.http.get("/healthz").status == 200
    daemon.check_alive()


def test_the_request_head_is_measured_as_received(ackd):
    # Whitespace around a value is not part of it, but takes room in
    # libmicrohttpd's block like the rest of the head: the head as received
    # may be at most the two limits and the line ends of 100 fields longer.
    daemon = ackd(config=LIMITS)  # 512 + 2048 bytes

    def get(spaces, cookie=""):
        head = (f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"X-Pad:{' ' * spaces}v\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "")
                + "\r\n")
        return exchange(daemon, head.encode(), half_close=False)

    assert one_answer(get(2000))[0] == 200
    status, _, answer = one_answer(get(3100))
    assert status == 431 and "request head" in json.loads(answer)["error"]["message"], answer
    # The copy of the Cookie header counts with the head as received.
    assert one_answer(get(1200, "a=" + "v" * 700))[0] == 200
    status, _, answer = one_answer(get(1200, "a=" + "v" * 900))
    assert status == 431 and "request head" in json.loads(answer)["error"]["message"], answer


def test_connections_over_max_connections_get_503_and_are_closed(ackd):
    daemon = ackd(config=LIMITS)
    idle = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5)
            idle.append(s)
        # The fifth open connection is one too many: its request is refused.
        for r in [daemon.http.get("/metrics"), daemon.http.post("/v1/topics/t", b"x")]:
            assert_error(r, 503, "unavailable")
            assert r.header("retry-after") == "1"
            assert r.header("connection") == "close"
        # A full server still says whether it is alive and ready.
        assert daemon.http.get("/healthz").status == 200
        assert daemon.http.get("/readyz").status in (200, 503)
        assert daemon.http.get("/readyz").json()["status"] != "unavailable"
    finally:
        for s in idle:
            s.close()
    # Once they are gone, requests are served again.
    wait_until(lambda: daemon.http.get("/metrics").status == 200, 10,
                         "metrics after the idle connections closed")


def _connect(daemon, listener):
    if listener == "tcp":
        return socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.unix_path))
    return s


def _healthz(s):
    """GET /healthz on s; its status, or None when nothing came back in time."""
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: ackd\r\n\r\n")
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
    except socket.timeout:
        return None
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("listener", ["tcp", "unix"])
def test_listener_holds_max_connections_plus_headroom_and_frees_them(ackd, listener):
    # A local listener serves its first 128 connections on one server and
    # the rest on another; together they hold max_connections + 64 (164
    # here), and one more waits in the backlog until one of them closes.
    # Twice: connections that closed give their places back to both servers.
    # (header_timeout_ms: no idle connection is closed early by the sweeper.)
    daemon = ackd(config={"limits": {"max_connections": 100, "header_timeout_ms": 120000}})
    for _ in range(2):
        socks = [_connect(daemon, listener) for _ in range(164)]
        try:
            for i, s in enumerate(socks):
                assert _healthz(s) == 200, f"connection {i} was not served"
            extra = _connect(daemon, listener)
            socks.append(extra)
            extra.settimeout(1)
            assert _healthz(extra) is None, "a connection beyond the limit was served"
            socks.pop(0).close()
            extra.settimeout(10)
            data = extra.recv(4096)
            assert data.startswith(b"HTTP/1.1 200"), data
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: daemon.http.get("/metrics").status == 200, 10,
                   "metrics after the connections closed")


def test_ops_endpoints_open_by_default_even_with_tokens(ackd):
    daemon = ackd(config={"auth": {"tokens": [{"token": "s3cret"}]}})
    assert daemon.http.get("/metrics").status == 200
    assert daemon.http.get("/v1/status").status == 200
    assert_error(daemon.http.post("/v1/topics/t", b"x"), 401, "unauthorized")


def test_protect_ops_puts_metrics_and_status_behind_tokens(ackd):
    daemon = ackd(config={"auth": {"tokens": [{"token": "s3cret", "topics": ["only-this"]}],
                                   "protect_ops": True}})
    for client in daemon.listeners():
        for path in ["/metrics", "/v1/status"]:
            r = client.get(path)
            assert_error(r, 401, "unauthorized")
            assert r.header("www-authenticate") == "Bearer"
            assert "auth.protect_ops" in r.json()["error"]["message"]
            assert_error(client.get(path, headers={"Authorization": "Bearer wrong"}), 401,
                         "unauthorized")
            # Any token will do, whatever topics it may publish to.
            r = client.get(path, headers={"Authorization": "Bearer s3cret"})
            assert r.status == 200, r.body
        assert client.get("/healthz").status == 200
        assert client.get("/readyz").status in (200, 503)
        assert client.get("/readyz").status != 401


def test_non_loopback_listener_without_tokens_is_refused(ackd_bin, tmp_path):
    conf = tmp_path / "ackd.conf"
    conf.write_text('listen = { http = "0.0.0.0:8470"; };\n'
                    'kafka = { brokers = "127.0.0.1:9092"; };\n')
    out = subprocess.run([ackd_bin, "-n", "-c", str(conf)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1
    assert (f"{conf}:1: listen.http: \"0.0.0.0:8470\" is not a loopback address; "
            "set auth.tokens before exposing the publish API beyond this host") in out.stderr
    conf.write_text('listen = { http = "0.0.0.0:8470"; };\n'
                    'kafka = { brokers = "127.0.0.1:9092"; };\n'
                    'auth = { tokens = ( { token = "s3cret"; } ); };\n')
    out = subprocess.run([ackd_bin, "-n", "-c", str(conf)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr


def closed_at_once(port):
    """A new connection to port is closed before it gets an answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def test_connections_per_address_are_capped_off_loopback(ackd_bin, kafka):
    # On 0.0.0.0 (tokens required) a client address may hold 6 connections.
    daemon = Ackd(ackd_bin, kafka.bootstrap, name="ackd-exposed",
                  config={"limits": {"max_connections_per_address": 6},
                          "auth": {"tokens": [{"token": "s3cret"}]}})
    daemon.settings["listen"]["http"] = f"0.0.0.0:{daemon.http_port}"
    daemon.write_config()
    daemon.start()
    socks = []
    try:
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5)
            socks.append(s)
            # Answered, so counted: the seventh cannot take its place.
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        assert closed_at_once(daemon.http_port)
        assert daemon.unix.get("/healthz").status == 200  # the Unix socket has no cap
        for s in socks:
            s.close()
        socks = []
        def served():
            try:
                return daemon.http.get("/healthz").status == 200
            except ConnectionError:
                return False  # closed by the cap: ackd has not seen all six go yet
        wait_until(served, 10, "healthz once the six are closed")
    finally:
        for s in socks:
            s.close()
        daemon.close()


def test_no_cap_per_address_on_loopback(ackd):
    # Every local client is 127.0.0.1: a cap per address would cap them all.
    daemon = ackd(config={"limits": {"max_connections_per_address": 2}})
    socks = [socket.create_connection(("127.0.0.1", daemon.http_port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        assert daemon.http.get("/healthz").status == 200
    finally:
        for s in socks:
            s.close()
