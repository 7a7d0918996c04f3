"""Hostile requests: none crashes ackd, none writes anything.

One ackd for the module, with small limits so each case is quick, and one
topic that exists in Kafka, so a request that got through would be written.
Each case sends raw bytes on its own connection, checks ackd's answer where
it gives one, and then that ackd is alive, /healthz answers 200, and no
record was accepted (ackd_publish_records_total stays 0). The last test reads
the topic: it must be empty. Run it against an ASan+UBSan build with
ACKD_BUILD_DIR pointing at it (../configure --enable-asan --enable-ubsan).
"""

import json
import re
import socket
import time

import pytest

from ackd_proc import Ackd, find_ackd

TOPIC = "hostile"
HEADER_TIMEOUT_MS = 1000
BODY_TIMEOUT_MS = 2000
LIMITS = {
    "max_body_bytes": 1048576,
    "max_inflight_body_bytes": 4 * 1048576,
    "max_header_bytes": 4096,
    "max_url_bytes": 1024,
    "max_connections": 16,
    "header_timeout_ms": HEADER_TIMEOUT_MS,
    "body_timeout_ms": BODY_TIMEOUT_MS,
}


@pytest.fixture(scope="module")
def daemon(kafka):
    kafka.create_topic(TOPIC)
    a = Ackd(find_ackd(), kafka.bootstrap, config={"limits": LIMITS}, name="ackd-hostile")
    a.start()
    yield a
    # A clean exit, and no sanitizer report when this is an ASan+UBSan build.
    status = a.stop()
    text = a.stderr_text()
    a.close()
    assert status == 0, text
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in text, text


def connect(daemon, timeout=5):
    return socket.create_connection(("127.0.0.1", daemon.http_port), timeout=timeout)


def exchange(daemon, data, timeout=5, half_close=True):
    """Send data, then read until ackd closes or timeout passes; the bytes read."""
    s = connect(daemon, timeout)
    out = b""
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ackd answered and closed before taking everything
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


def answers(raw):
    """(status, headers dict, body) of each answer in raw."""
    out = []
    while raw:
        if out and not raw.startswith(b"HTTP/1."):
            break  # libmicrohttpd's own refusals may repeat their head: nothing more to see
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete answer: {raw[:200]!r}"
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ", lines[0] + b" ")
        assert m, f"not a status line: {lines[0][:200]!r}"
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode("latin-1")
        n = int(headers.get("content-length", "0"))
        body, raw = rest[:n], rest[n:]
        if "application/json" in headers.get("content-type", "") and body:
            # Valid UTF-8 and valid JSON, whatever the client sent.
            json.loads(body.decode("utf-8"))
        out.append((int(m.group(1)), headers, body))
    return out


def one_answer(raw, status=None):
    got = answers(raw)
    assert got, "no answer"
    if status is not None:
        assert got[0][0] == status, got[0]
    return got[0]


def records_accepted(daemon):
    text = daemon.http.get("/metrics").body.decode()
    m = re.search(r"^ackd_publish_records_total (\d+)$", text, re.M)
    return int(m.group(1))


def assert_unharmed(daemon):
    daemon.check_alive()
    assert daemon.http.get("/healthz", timeout=5).status == 200
    assert daemon.unix.get("/healthz", timeout=5).status == 200
    assert records_accepted(daemon) == 0


def post(path, body=b"x", extra=b"", length=None):
    n = len(body) if length is None else length
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra +
            b"Content-Length: " + str(n).encode() + b"\r\n\r\n" + body)


def batch(body, extra=b""):
    return post(b"/v1/topics/" + TOPIC.encode() + b"/records", body,
                b"Content-Type: application/json\r\n" + extra)


def error_message(raw, status):
    _, _, body = one_answer(raw, status)
    return json.loads(body)["error"]["message"]


# --- cases: each sends, checks the answer, and leaves ackd unharmed -------------

def test_invalid_utf8_in_path_is_answered(daemon):
    # This one ended the daemon: jansson refused the message quoting the path.
    msg = error_message(exchange(daemon, b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n"), 404)
    assert msg == "no such path: /\ufffd"
    for path in [b"/%ff%fe%fd", b"/%c3", b"/%e2%82", b"/%ed%a0%80", b"/%f4%90%80%80",
                 b"/\xff\xfe", b"/" + b"a" * 600 + b"%c3%a9" * 60]:  # 961 bytes as sent
        one_answer(exchange(daemon, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 404)
    assert_unharmed(daemon)


def test_invalid_utf8_in_query_and_topic(daemon):
    one_answer(exchange(daemon, post(b"/v1/topics/hostile?ack=%ff")), 400)
    one_answer(exchange(daemon, post(b"/v1/topics/hostile?partition=%ff%fe")), 400)
    one_answer(exchange(daemon, post(b"/v1/topics/hos%fftile")), 400)
    one_answer(exchange(daemon, b"GET /%ff?%ff=%fe HTTP/1.1\r\nHost: x\r\n\r\n"), 404)
    assert_unharmed(daemon)


def test_nul_and_control_characters_in_topic(daemon):
    # %00 cut the name at the NUL: /v1/topics/hostile%00evil published to hostile.
    for path in [b"/v1/topics/hostile%00evil", b"/v1/topics/hostile%00", b"/v1/topics/hos%0atile",
                 b"/v1/topics/hostile%0d%0a", b"/v1/topics/hostile%7f", b"/v1/topics/hostile%1b",
                 b"/v1/topics/hostile%00/records"]:
        msg = error_message(exchange(daemon, post(path)), 400)
        assert msg == "the path holds a control character", (path, msg)
    assert_unharmed(daemon)


def test_escaped_slash_in_path(daemon):
    # Unescaped before routing: /v1/topics/hostile%2Frecords was a batch to hostile.
    for path in [b"/v1/topics/hostile%2Frecords", b"/v1/topics/hos%2ftile",
                 b"/topics/hostile%2F", b"/v3/clusters/c%2Fd/topics/hostile/records",
                 b"/v1/subscriptions/a%2Fb/pause"]:
        body = json.loads(one_answer(exchange(daemon, post(path)), 400)[2])
        msg = body["message"] if "message" in body else body["error"]["message"]  # REST Proxy's shape
        assert msg == "the path holds an escaped '/' (%2F); no name in a path may contain '/'", \
            (path, msg)
    assert_unharmed(daemon)


def test_huge_content_length(daemon):
    # 2^64-1 and 2^63 passed the signed comparison and were allocated up front.
    for n in [b"18446744073709551615", b"9223372036854775808", b"9223372036854775807",
              b"1048577"]:
        req = (b"POST /v1/topics/hostile HTTP/1.1\r\nHost: x\r\nContent-Length: " + n +
               b"\r\n\r\nx")
        raw = exchange(daemon, req)
        if raw:  # libmicrohttpd may refuse a number it cannot hold before ackd sees it
            assert one_answer(raw)[0] in (400, 413)
    raw = exchange(daemon, b"POST /v1/topics/hostile HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 99999999999999999999999999\r\n\r\nx")
    if raw:
        assert one_answer(raw)[0] in (400, 413)
    assert_unharmed(daemon)


def test_conflicting_lengths(daemon):
    # libmicrohttpd reads by the first Content-Length: "x" was published and
    # "xxxx" taken as the next request.
    msg = error_message(exchange(daemon, b"POST /v1/topics/hostile?ack=spool HTTP/1.1\r\n"
                                         b"Host: x\r\nContent-Length: 1\r\n"
                                         b"Content-Length: 5\r\n\r\nxxxxx"), 400)
    assert msg == "more than one Content-Length header"
    for extra in [b"Content-Length: 1\r\nContent-Length: 5\r\n",
                  b"Content-Length: -1\r\n", b"Content-Length: 1x\r\n",
                  b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"]:
        req = b"POST /v1/topics/hostile?ack=spool HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\nxxxxx"
        for status, _, _ in answers(exchange(daemon, req)):
            assert status >= 400
    assert records_accepted(daemon) == 0
    assert_unharmed(daemon)


def test_overlong_request_line_and_headers(daemon):
    raw = exchange(daemon, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    if raw:
        assert one_answer(raw)[0] in (414, 431, 400)
    raw = exchange(daemon, post(b"/v1/topics/hostile?key=" + b"k" * 2000))
    assert one_answer(raw)[0] == 414
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    raw = exchange(daemon, post(b"/v1/topics/hostile", extra=many))
    if raw:
        assert one_answer(raw)[0] in (431, 400)
    raw = exchange(daemon, post(b"/v1/topics/hostile", extra=b"X-Big: " + b"v" * 100000 + b"\r\n"))
    if raw:
        assert one_answer(raw)[0] in (431, 400)
    raw = exchange(daemon, b"\r\n" * 20000)
    assert_unharmed(daemon)


def test_bad_chunked_framing(daemon):
    head = b"POST /v1/topics/hostile?ack=spool HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for body in [b"zz\r\nabc\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
                 b"3\r\nabcdef\r\n0\r\n\r\n", b"3\r\nab", b"-1\r\nabc\r\n0\r\n\r\n",
                 b"3\r\nabc\r\nX\r\n\r\n", b"8000000000000000\r\nx\r\n",
                 b"3\r\nabc\r\n" + b"1\r\nx\r\n" * 5000 + b"zz\r\n"]:
        for status, _, _ in answers(exchange(daemon, head + body)):
            assert status >= 400
    assert_unharmed(daemon)


def test_pipelined_garbage(daemon):
    raw = exchange(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00\xff GARBAGE \r\n" * 50 +
                   b"\r\n\r\n")
    assert answers(raw)[0][0] == 200
    raw = exchange(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3 +
                   post(b"/v1/topics/hostile%00") + b"POST /\x00\x01 HTTP/1.1\r\n\r\n")
    statuses = [a[0] for a in answers(raw)]
    assert statuses[:4] == [200, 200, 200, 400], statuses
    assert_unharmed(daemon)


def test_nul_bytes(daemon):
    for req in [b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /v1/topics/host\x00ile HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                post(b"/v1/topics/hostile", extra=b"Kafka-Header-a\x00b: v\r\n"),
                b"\x00" * 1000]:
        for status, _, _ in answers(exchange(daemon, req)):
            assert status >= 400
    one_answer(exchange(daemon, batch(
        b'{"records":[{"value":"a","headers":{"a\\u0000b":"v"}}]}')), 400)
    assert_unharmed(daemon)


def test_invalid_header_names(daemon):
    for name in [b"\xff\xfe", b"caf\xc3", b"a\x7fb", b"\x1b[31m"]:
        msg = error_message(exchange(daemon, post(b"/v1/topics/hostile",
                                                  extra=b"Kafka-Header-" + name + b": v\r\n")), 400)
        assert "header" in msg
    assert_unharmed(daemon)


def test_invalid_utf8_in_json(daemon):
    for body in [b'{"records":[{"value":"\xff"}]}', b'{"records":[{"value":"a","\xff\xfe":1}]}',
                 b'{"records":[{"value":"a"}],"x\xe2\x82":1}', b'{"\xc0\xaf":1}',
                 b'{"records":[{"value":"a","' + b"x" * 63 + b'\xc3\xa9":1}]}',
                 b'{"records":[{"value":"a","headers":{"\\ud800":"v"}}]}',
                 b'{"records":[{"value":"a","headers":{"a\\r\\nb":"v"}}]}']:
        one_answer(exchange(daemon, batch(body)), 400)
    assert_unharmed(daemon)


def test_deep_json_nesting(daemon):
    for depth in [3000, 100000]:
        one_answer(exchange(daemon, batch(b"[" * depth + b"]" * depth)), 400)
        one_answer(exchange(daemon, batch(b'{"records":[{"value":' + b"[" * depth +
                                          b"]" * depth + b"}]}")), 400)
        one_answer(exchange(daemon, batch(b'{"records":[{"value":' + b'{"a":' * depth +
                                          b"1" + b"}" * depth + b"}]}")), 400)
    assert_unharmed(daemon)


def test_record_the_spool_cannot_hold(daemon):
    # Record 1 was left out of the spool while the client got 202 and three ids.
    body = json.dumps({"records": [{"value": "a"}, {"value": "b", "headers": {"h" * 70000: "v"}},
                                   {"value": "c"}]}).encode()
    msg = error_message(exchange(daemon, batch(body)), 400)
    assert msg.startswith("records[1].headers.hhhh") and "longer than 255 bytes" in msg
    many = {f"h{i}": "v" for i in range(101)}
    body = json.dumps({"records": [{"value": "a"}, {"value": "b", "headers": many}]}).encode()
    assert error_message(exchange(daemon, batch(body)), 400) == \
        "records[1].headers: 101 headers, more than 100"
    assert_unharmed(daemon)


def test_methods_versions_and_forms(daemon):
    for req in [b"BREW /v1/topics/hostile HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
                b"GET /healthz\r\n\r\n",
                b"POST http://x/v1/topics/hostile HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                b"POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                b"        \r\n\r\n",
                b"POST /v1/topics/hostile HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 99999999\r\n\r\n"]:
        for status, _, _ in answers(exchange(daemon, req)):
            assert status >= 400 or status == 100
    assert_unharmed(daemon)


# --- slow clients, held memory ---------------------------------------------------

def test_header_trickle_is_cut_and_probes_still_answer(daemon):
    # A few dozen clients sending "GET /heal" and nothing more, then a byte at
    # a time: /healthz still answers, and each is closed at header_timeout_ms.
    socks = [connect(daemon) for _ in range(40)]
    try:
        for s in socks:
            s.sendall(b"GET /heal")
        start = time.monotonic()
        t0 = time.monotonic()
        r = daemon.http.get("/healthz", timeout=5)
        assert r.status == 200, r.body
        assert time.monotonic() - t0 < 2
        closed = set()
        while len(closed) < len(socks) and time.monotonic() - start < HEADER_TIMEOUT_MS / 1000 + 3:
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(b"t")
                    s.settimeout(0.01)
                    if s.recv(1) == b"":
                        closed.add(i)
                except (socket.timeout, BlockingIOError):
                    pass
                except OSError:
                    closed.add(i)
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        assert len(closed) == len(socks), f"{len(closed)} of {len(socks)} closed"
        assert elapsed < HEADER_TIMEOUT_MS / 1000 + 3
    finally:
        for s in socks:
            s.close()
    assert_unharmed(daemon)


def test_body_trickle_is_cut(daemon):
    s = connect(daemon)
    try:
        s.sendall(b"POST /v1/topics/hostile HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < BODY_TIMEOUT_MS / 1000 + 3:
            try:
                s.sendall(b"x" * 10)
                s.settimeout(0.05)
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        assert closed
        assert time.monotonic() - start >= BODY_TIMEOUT_MS / 1000 - 0.5
    finally:
        s.close()
    assert_unharmed(daemon)


def test_stalled_uploads_hold_at_most_the_budget(daemon):
    # Eight uploads of most of 1 MiB that stall: the first four fill the 4 MiB
    # budget, the rest keep nothing; a new publish gets 503 with Retry-After.
    socks = []
    try:
        for _ in range(8):
            s = connect(daemon)
            s.sendall(b"POST /v1/topics/hostile HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 1048576\r\n\r\n" + b"v" * (1048576 - 100))
            socks.append(s)
        time.sleep(0.5)
        raw = exchange(daemon, post(b"/v1/topics/hostile", b"small"))
        status, headers, body = one_answer(raw, 503)
        assert headers.get("retry-after") == "1"
        assert "limits.max_inflight_body_bytes" in json.loads(body)["error"]["message"]
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert_unharmed(daemon)


def test_nothing_reached_the_topic(daemon, kafka):
    assert_unharmed(daemon)
    assert kafka.read_topic(TOPIC) == []
    status = daemon.http.get("/v1/status").json()
    assert status["spool"]["records"] == 0, status["spool"]
