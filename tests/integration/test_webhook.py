"""Webhook delivery as docs/webhooks.md describes it (offsets committed only after delivery) against a real
Kafka broker and the in-process webhook sink.

Every test reads back what it needs from Kafka itself: the records (to compare
bodies, keys, headers and timestamps with what the sink received), the
dead-letter topic, and the consumer group's committed offsets (which must
never pass a message the endpoint has not taken).
"""

import base64
import hashlib
import hmac
import random
import re
import signal
import threading
import time
import urllib.parse
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)

from ackd_proc import free_port, project_version
from kafka import wait_until
from webhook_sink import Reply, WebhookSink

SECRET_A = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_B = "whsec_" + base64.b64encode(hashlib.sha256(b"rotation").digest()[:24]).decode()

# A killed consumer leaves the group after this; the broker's minimum is 6 s.
CONSUMER_SETTINGS = {"kafka": {"consumer": ["session.timeout.ms=6000",
                                            "heartbeat.interval.ms=500"]}}

DELIVERY_TIMEOUT = 60
DLQ_HEADERS = ("ackd-dlq-reason", "ackd-dlq-status", "ackd-dlq-attempts",
               "ackd-dlq-source-topic", "ackd-dlq-source-partition", "ackd-dlq-source-offset")


# --- helpers -----------------------------------------------------------------

def new_topic(kafka, partitions=1, prefix="wh", configs=None):
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=partitions, configs=configs)
    return name


def subscription(topic, sink, path="/hook", **overrides):
    """A subscription of topic to the sink, quick to retry; overrides replace
    keys (retry is merged)."""
    sub = {
        "name": "hook",
        "topics": [topic],
        "group": f"grp-{topic}",
        "url": sink.url(path),
        "timeout_ms": 5000,
        "retry": {"initial_ms": 200, "max_ms": 2000, "max_attempts": 10,
                  "max_retry_after_ms": 10000},
    }
    retry = overrides.pop("retry", {})
    sub.update(overrides)
    sub["retry"] = {**sub["retry"], **retry}
    return sub


def start_ackd(ackd, *subs, config=None):
    cfg = {**CONSUMER_SETTINGS, **(config or {})}
    return ackd(config=cfg, subscriptions=list(subs))


def produce_all(kafka, topic, messages, timeout=60):
    """Produce dicts (value, key, headers, partition, timestamp in ms) with
    acks=all; returns [(partition, offset)] in the same order."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": timeout * 1000})
    results = [None] * len(messages)

    def on_delivery(i):
        def cb(err, msg):
            results[i] = err if err is not None else (msg.partition(), msg.offset())
        return cb

    for i, m in enumerate(messages):
        kwargs = {"value": m.get("value"), "key": m.get("key"),
                  "headers": m.get("headers"), "on_delivery": on_delivery(i)}
        if m.get("partition") is not None:
            kwargs["partition"] = m["partition"]
        if m.get("timestamp") is not None:
            kwargs["timestamp"] = m["timestamp"]
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(timeout) == 0, "messages left unacknowledged"
    for r in results:
        assert isinstance(r, tuple), f"produce failed: {r}"
    return results


def end_offsets(kafka, topic):
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap,
                         "group.id": f"ends-{uuid.uuid4()}"})
    try:
        md = consumer.list_topics(topic=topic, timeout=10)
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in md.topics[topic].partitions}
    finally:
        consumer.close()


def wait_committed(kafka, group, topic, expected, timeout=30):
    """Until the group's committed offsets equal expected ({partition: offset})."""
    seen = {}

    def done():
        seen.update(kafka.committed(group, topic))
        return all(seen.get(p) == o for p, o in expected.items())

    try:
        wait_until(done, timeout, f"committed offsets {expected}", interval=0.3)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last seen {seen}") from None


def coords(req):
    return int(req.header("ackd-partition")), int(req.header("ackd-offset"))


def pct(value):
    """Percent-encoding as docs/webhooks.md means it: every byte but the unreserved."""
    return urllib.parse.quote(value if value is not None else b"", safe="")


def expected_signature(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def assert_signed(req, secrets):
    """webhook-signature holds one valid v1 entry per secret, in order."""
    entries = (req.header("webhook-signature") or "").split(" ")
    assert len(entries) == len(secrets), req.header("webhook-signature")
    for entry, secret in zip(entries, secrets):
        want = expected_signature(secret, req.header("webhook-id"),
                                  req.header("webhook-timestamp"), req.body)
        assert hmac.compare_digest(entry, want), (entry, want)


def coords_id(topic, partition, offset):
    digest = hashlib.sha256(f"{topic}/{partition}/{offset}".encode()).hexdigest()
    return "msg_" + digest[:32]


def overlapping(a, b):
    return a.started < b.answered and b.started < a.answered


def max_concurrency(reqs):
    events = sorted([(r.started, 1) for r in reqs] + [(r.answered, -1) for r in reqs],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def attempts_of(sink, msg_id, path="/hook"):
    return [r for r in sink.received(path) if r.header("webhook-id") == msg_id]


def wait_answered(sink, count, path="/hook", timeout=DELIVERY_TIMEOUT):
    """The first count requests to path, once each of them was answered."""
    got = sink.wait_for(count, timeout=timeout, path=path)
    wait_until(lambda: all(r.answered is not None for r in sink.received(path)), 10,
               "the sink to answer")
    return got


# --- the sink's own checks ---------------------------------------------------

def test_signature_helper_matches_design_vector():
    """The verifier below agrees with the test vector of docs/webhooks.md."""
    got = expected_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                             "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                             b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# --- delivery: headers, signatures, bodies -----------------------------------

def test_every_message_arrives_signed_with_every_header(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=3)
    sub = subscription(topic, webhook_sink, secrets=[SECRET_A, SECRET_B])
    daemon = start_ackd(ackd, sub)

    # 20 through ackd's publish API: they carry ackd-id.
    published = {}
    for i in range(20):
        key = f"pub key/{i}?&é"
        r = daemon.http.post(
            f"/v1/topics/{topic}?key={urllib.parse.quote(key, safe='')}&partition={i % 3}",
            body=f'{{"n":{i},"s":"a\\u00e9"}}'.encode(),
            headers={"Content-Type": "application/json",
                     "Kafka-Header-Trace": f"trace id/{i}?x=1&y=%"})
        assert r.status == 200, r.body
        doc = r.json()
        published[(doc["partition"], doc["offset"])] = doc["id"]

    # 280 straight to Kafka: no ackd-id, assorted keys, values and headers.
    rnd = random.Random(7)
    direct = []
    for i in range(280):
        headers = [("seq", str(i).encode()), ("odd", bytes([0, 0xFF, 0x20, 0x25, 0x0A]) + b"x")]
        if i % 4 == 0:
            headers.append(("content-type", b"text/plain; charset=utf-8"))
        elif i % 12 == 2:
            headers.append(("content-type", b""))  # empty: as if there were none
        if i % 7 == 0:
            headers.append(("empty", b""))
        if i % 5 == 3:
            headers.append(("nullh", None))
        key = [None, b"", b"k\x00 \xff/%~", f"key-{i % 5}".encode()][i % 4]
        value = [None, b"", bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 3000))),
                 f"value {i}".encode()][i % 4]
        direct.append({"value": value, "key": key, "headers": headers, "partition": i % 3})
    produce_all(kafka, topic, direct)

    webhook_sink.wait_for(300, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    got = webhook_sink.received()
    records = {(r.partition, r.offset): r for r in kafka.read_topic(topic)}
    assert len(records) == 300
    seen = [coords(r) for r in got]
    assert sorted(seen) == sorted(records), "every offset once, nothing else"

    version = project_version()
    for req in got:
        rec = records[coords(req)]
        assert req.method == "POST" and req.path == "/hook"
        assert req.status == 200
        assert req.body == (rec.value or b""), coords(req)
        ackd_id = rec.header("ackd-id")
        if ackd_id is not None:
            assert published[coords(req)] == ackd_id.decode()
            assert req.header("webhook-id") == ackd_id.decode()
        else:
            assert req.header("webhook-id") == coords_id(topic, rec.partition, rec.offset)
        ts = int(req.header("webhook-timestamp"))
        assert req.time - 5 <= ts <= req.time + 1, (ts, req.time)
        assert_signed(req, [SECRET_A, SECRET_B])
        assert req.header("ackd-topic") == topic
        assert req.header("ackd-attempt") == "1"
        assert req.header("ackd-timestamp") == str(rec.timestamp)
        if rec.key is None:
            assert "ackd-key" not in req.headers, req.header("ackd-key")
        else:
            assert "ackd-key" in req.headers, f"no ackd-key for key {rec.key!r}"
            assert req.header("ackd-key") == pct(rec.key)
        want_headers = {f"ackd-header-{name}": pct(v) for name, v in rec.headers}
        sent_headers = {k.lower(): v for k, v in req.headers.items()
                        if k.lower().startswith("ackd-header-")}
        assert sent_headers == want_headers, coords(req)
        ctype = rec.header("content-type")
        assert req.header("content-type") == (ctype.decode() if ctype
                                              else "application/octet-stream")
        assert req.header("user-agent") == f"ackd/{version}"
    assert len(published) == 20
    assert sum(1 for r in got if r.header("ackd-header-ackd-id")) == 20


def test_unix_socket_webhook(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=2)
    sub = subscription(topic, webhook_sink, url="http://localhost/hook",
                       unix_socket=webhook_sink.unix_path, secrets=[SECRET_A])
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"u{i}".encode(), "key": f"k{i}".encode(),
                                "partition": i % 2} for i in range(40)])

    webhook_sink.wait_for(40, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 20, 1: 20})
    got = webhook_sink.received()
    assert len(got) == 40
    assert {r.via for r in got} == {"unix"}
    assert {r.path for r in got} == {"/hook"}
    assert sorted(r.body for r in got) == sorted(f"u{i}".encode() for i in range(40))
    for req in got:
        assert_signed(req, [SECRET_A])


def test_an_ackd_id_header_that_is_not_plain_is_not_used_as_webhook_id(kafka, ackd,
                                                                       webhook_sink):
    # Any producer can write an ackd-id header; it must not reach the request
    # as anything but a percent-encoded ackd-header-ackd-id.
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink, secrets=[SECRET_A])
    start_ackd(ackd, sub)
    evil = b"abc\r\nX-Injected: 1"
    (where,) = produce_all(kafka, topic, [{"value": b"v", "headers": [("ackd-id", evil)]}])

    webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT)
    (req,) = webhook_sink.received()
    assert req.headers["webhook-id"] == coords_id(topic, *where)
    assert "x-injected" not in {name.lower() for name in req.headers}
    assert req.headers["ackd-header-ackd-id"] == pct(evil)
    assert_signed(req, [SECRET_A])


# --- ordering ------------------------------------------------------------------

def random_delay(rnd, low, high):
    lock = threading.Lock()

    def respond(req):
        with lock:
            d = rnd.uniform(low, high)
        return Reply(200, delay=d)
    return respond


def test_ordering_partition_keeps_each_partition_in_order(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=3)
    webhook_sink.respond("/hook", random_delay(random.Random(1), 0, 0.015))
    sub = subscription(topic, webhook_sink, ordering="partition")
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"p{i}".encode(), "key": f"k{i % 11}".encode(),
                                "partition": i % 3} for i in range(240)])

    wait_answered(webhook_sink, 240)
    wait_committed(kafka, sub["group"], topic, {0: 80, 1: 80, 2: 80})
    got = webhook_sink.received()
    assert len(got) == 240
    for p in range(3):
        reqs = sorted((r for r in got if coords(r)[0] == p), key=lambda r: r.started)
        offsets = [coords(r)[1] for r in reqs]
        assert offsets == list(range(80)), f"partition {p} out of order: {offsets}"
        for prev, nxt in zip(reqs, reqs[1:]):
            assert nxt.started >= prev.answered, (
                f"partition {p}: offset {coords(nxt)[1]} sent before offset "
                f"{coords(prev)[1]} was answered")
    # The partitions themselves do run side by side.
    assert max_concurrency(got) >= 2


def test_ordering_key_keeps_each_key_in_order_and_keys_overlap(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=2)
    webhook_sink.respond("/hook", random_delay(random.Random(2), 0.005, 0.04))
    sub = subscription(topic, webhook_sink, ordering="key", max_in_flight=16)
    rnd = random.Random(3)
    msgs = [{"value": f"v{i}".encode(), "key": f"key-{rnd.randrange(6)}".encode(),
             "partition": i % 2} for i in range(200)]
    placed = produce_all(kafka, topic, msgs)
    sampler = CommitSampler(kafka, sub["group"], topic, webhook_sink, 2)
    sampler.start()
    try:
        start_ackd(ackd, sub)
        wait_answered(webhook_sink, 200)
        wait_committed(kafka, sub["group"], topic, {0: 100, 1: 100})
    finally:
        sampler.stop()
    assert sampler.violations == [], sampler.violations[:10]
    got = webhook_sink.received()
    assert len(got) == 200
    expected_by_key = {}
    for m, (p, o) in zip(msgs, placed):
        expected_by_key.setdefault((p, m["key"].decode()), []).append(o)
    overlaps_within_partition = 0
    for (p, key), offsets in expected_by_key.items():
        reqs = sorted((r for r in got if coords(r)[0] == p and r.header("ackd-key") == key),
                      key=lambda r: r.started)
        assert [coords(r)[1] for r in reqs] == offsets, f"key {key} on {p} out of order"
        for prev, nxt in zip(reqs, reqs[1:]):
            assert nxt.started >= prev.answered, (
                f"key {key}: offset {coords(nxt)[1]} sent while {coords(prev)[1]} was out")
    for p in range(2):
        reqs = [r for r in got if coords(r)[0] == p]
        overlaps_within_partition += sum(
            1 for i, a in enumerate(reqs) for b in reqs[i + 1:]
            if a.header("ackd-key") != b.header("ackd-key") and overlapping(a, b))
    print(f"ordering=key: {overlaps_within_partition} overlapping pairs of different keys "
          f"within a partition, peak {max_concurrency(got)} in flight")
    assert overlaps_within_partition > 0, "different keys of a partition never overlapped"


def test_ordering_none_runs_up_to_max_in_flight(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=1)
    # Offset 3 is slow: the others overtake it, the commit must not.
    webhook_sink.respond("/hook", lambda req: Reply(200, delay=3.0 if coords(req)[1] == 3
                                                    else 0.25))
    sub = subscription(topic, webhook_sink, ordering="none", max_in_flight=8)
    produce_all(kafka, topic, [{"value": f"n{i}".encode(), "partition": 0}
                               for i in range(64)])
    sampler = CommitSampler(kafka, sub["group"], topic, webhook_sink, 1)
    sampler.start()
    try:
        start_ackd(ackd, sub)
        wait_answered(webhook_sink, 64)
        wait_committed(kafka, sub["group"], topic, {0: 64})
    finally:
        sampler.stop()
    got = webhook_sink.received()
    assert sorted(coords(r)[1] for r in got) == list(range(64))
    peak = max_concurrency(got)
    slow = next(r for r in got if coords(r)[1] == 3)
    overtaken = sum(1 for r in got if coords(r)[1] > 3 and r.answered < slow.answered)
    print(f"ordering=none: peak {peak} requests in flight (max_in_flight 8), {overtaken} "
          f"overtook the slow offset 3, {sampler.samples} commit samples")
    assert peak == 8
    assert overtaken > 8
    assert sampler.violations == [], sampler.violations[:10]


# --- retries -------------------------------------------------------------------

def fail_first(k, status=500, target_offset=None):
    """A responder failing the first k attempts of the message at target_offset."""
    def respond(req):
        if coords(req)[1] == target_offset and int(req.header("ackd-attempt")) <= k:
            return status
        return 200
    return respond


def test_retries_count_attempts_and_back_off_longer_each_time(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=1)
    webhook_sink.respond("/hook", fail_first(4, 500, target_offset=1))
    sub = subscription(topic, webhook_sink, secrets=[SECRET_A],
                       retry={"initial_ms": 200, "max_ms": 2000})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"r{i}".encode(), "partition": 0}
                               for i in range(3)])

    wait_answered(webhook_sink, 1 + 5 + 1)
    wait_committed(kafka, sub["group"], topic, {0: 3})
    got = webhook_sink.received()
    tries = [r for r in got if coords(r)[1] == 1]
    assert [r.header("ackd-attempt") for r in tries] == ["1", "2", "3", "4", "5"]
    assert [r.status for r in tries] == [500, 500, 500, 500, 200]
    assert len({r.header("webhook-id") for r in tries}) == 1, "webhook-id changed on retry"
    for r in tries:
        assert_signed(r, [SECRET_A])
    gaps = [nxt.started - prev.answered for prev, nxt in zip(tries, tries[1:])]
    print("retry gaps (s):", [round(g, 3) for g in gaps])
    for i, gap in enumerate(gaps):
        base = min(0.2 * 2 ** i, 2.0)
        assert gap >= 0.8 * base, f"retry {i + 2} after {gap:.3f}s, backoff is {base}s -20%"
        assert gap <= 1.2 * base + 0.5, f"retry {i + 2} after {gap:.3f}s, backoff is {base}s"
    assert all(b > a for a, b in zip(gaps, gaps[1:])), f"gaps do not grow: {gaps}"
    # Partition order: offset 2 only after offset 1 was delivered.
    assert [coords(r)[1] for r in got] == [0, 1, 1, 1, 1, 1, 2]


def test_retry_after_is_honoured(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=1)
    webhook_sink.script("/hook", Reply(503, {"Retry-After": "3"}))
    sub = subscription(topic, webhook_sink, retry={"initial_ms": 200, "max_ms": 2000})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"ra", "partition": 0}])

    first, second = wait_answered(webhook_sink, 2)
    wait_committed(kafka, sub["group"], topic, {0: 1})
    gap = second.started - first.answered
    print(f"Retry-After: 3 -> next attempt after {gap:.3f}s")
    assert first.status == 503 and second.status == 200
    assert second.header("ackd-attempt") == "2"
    assert gap >= 3.0, f"retried {gap:.3f}s after Retry-After: 3"
    assert gap < 5.0


def test_redirect_is_not_followed_and_misconfigured_answers_retry(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=1)
    dlq = new_topic(kafka, partitions=1, prefix="dlq")
    webhook_sink.script("/hook", Reply(302, {"Location": webhook_sink.url("/elsewhere")}),
                        Reply(307, {"Location": webhook_sink.url("/elsewhere")}), 401, 403, 404)
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq,
                       retry={"initial_ms": 100, "max_ms": 1000})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"redirected", "partition": 0},
                               {"value": b"after", "partition": 0}])

    wait_answered(webhook_sink, 7)
    wait_committed(kafka, sub["group"], topic, {0: 2})
    time.sleep(0.5)
    got = webhook_sink.received()
    assert webhook_sink.received("/elsewhere") == [], "the Location target was called"
    first = [r for r in got if coords(r)[1] == 0]
    assert [r.status for r in first] == [302, 307, 401, 403, 404, 200]
    assert [r.header("ackd-attempt") for r in first] == ["1", "2", "3", "4", "5", "6"]
    assert [coords(r)[1] for r in got] == [0] * 6 + [1]
    assert kafka.read_topic(dlq) == [], "a misconfigured endpoint's message was dropped"


def test_timeout_and_connection_error_are_retried(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=1)
    webhook_sink.script("/hook", Reply(200, delay=2.0))
    sub = subscription(topic, webhook_sink, timeout_ms=500,
                       retry={"initial_ms": 100, "max_ms": 500})
    # A second subscription whose endpoint refuses connections until a sink
    # appears there: a port nothing listens on, served later.
    refused_topic = new_topic(kafka, partitions=1)
    refused_port = free_port()
    refused_sub = subscription(refused_topic, webhook_sink, name="refused",
                               url=f"http://127.0.0.1:{refused_port}/late",
                               retry={"initial_ms": 100, "max_ms": 500})
    start_ackd(ackd, sub, refused_sub)
    produce_all(kafka, topic, [{"value": b"slow", "partition": 0},
                               {"value": b"next", "partition": 0}])
    produce_all(kafka, refused_topic, [{"value": b"refused", "partition": 0}])

    wait_committed(kafka, sub["group"], topic, {0: 2})
    got = webhook_sink.received()
    first = [r for r in got if coords(r)[1] == 0]
    assert [r.header("ackd-attempt") for r in first] == ["1", "2"], [
        (r.header("ackd-attempt"), r.status) for r in got]
    # The second attempt went out once the first timed out (0.5 s), not when
    # the slow answer finally came (2 s).
    assert 0.5 <= first[1].started - first[0].started < 1.9
    assert [coords(r)[1] for r in got] == [0, 0, 1]

    time.sleep(1.0)  # connections refused meanwhile
    assert kafka.committed(refused_sub["group"], refused_topic)[0] < 1
    with WebhookSink(tcp_port=refused_port) as late_sink:
        wait_committed(kafka, refused_sub["group"], refused_topic, {0: 1})
        late = late_sink.received("/late")
    assert [r.body for r in late] == [b"refused"]
    assert int(late[0].header("ackd-attempt")) >= 3, "connection errors were not retried"


# --- dead letters, blocking, 410 -----------------------------------------------

def test_poison_and_exhausted_messages_go_to_the_dead_letter_topic(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=2)
    dlq = new_topic(kafka, partitions=1, prefix="dlq")

    def respond(req):
        p, o = coords(req)
        if (p, o) == (0, 1):
            return Reply(400, body=b"bad payload")
        if (p, o) == (1, 2):
            return 500
        return 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq,
                       retry={"initial_ms": 100, "max_ms": 1000, "max_attempts": 3})
    start_ackd(ackd, sub)
    msgs = []
    for p in range(2):
        for i in range(5):
            msgs.append({"value": f"p{p}-{i}".encode() + b"\x00\xff", "key": f"k{p}{i}".encode(),
                         "headers": [("h1", f"x{i}".encode()), ("h2", b"\x01 y")],
                         "partition": p})
    produce_all(kafka, topic, msgs)

    wait_committed(kafka, sub["group"], topic, {0: 5, 1: 5})
    got = webhook_sink.received()
    assert sorted(coords(r) for r in got if r.status == 200) == sorted(
        (p, o) for p in range(2) for o in range(5) if (p, o) not in {(0, 1), (1, 2)})
    poison = [r for r in got if coords(r) == (0, 1)]
    assert [r.status for r in poison] == [400], "a 400 is not retried"
    exhausted = [r for r in got if coords(r) == (1, 2)]
    assert [r.header("ackd-attempt") for r in exhausted] == ["1", "2", "3"]
    # The partitions moved on, in order, after the dead letter.
    for p, bad in ((0, 1), (1, 2)):
        reqs = sorted((r for r in got if coords(r)[0] == p), key=lambda r: r.started)
        assert [coords(r)[1] for r in reqs if r.status == 200] == [o for o in range(5)
                                                                   if o != bad]
        last_bad = [r for r in reqs if coords(r)[1] == bad][-1]
        assert all(r.started >= last_bad.answered for r in reqs if coords(r)[1] > bad)

    source = {(r.partition, r.offset): r for r in kafka.read_topic(topic)}
    dead = kafka.read_topic(dlq)
    assert len(dead) == 2, dead
    by_source = {(int(d.header("ackd-dlq-source-partition")),
                  int(d.header("ackd-dlq-source-offset"))): d for d in dead}
    assert set(by_source) == {(0, 1), (1, 2)}
    for (p, o), d in by_source.items():
        orig = source[(p, o)]
        assert d.key == orig.key and d.value == orig.value
        assert [h for h in d.headers if h[0] not in DLQ_HEADERS] == orig.headers
        assert d.header("ackd-dlq-source-topic") == topic.encode()
        for name in DLQ_HEADERS:
            assert len([h for h in d.headers if h[0] == name]) == 1, name
        assert d.header("ackd-dlq-reason")
    assert by_source[(0, 1)].header("ackd-dlq-status") == b"400"
    assert by_source[(0, 1)].header("ackd-dlq-attempts") == b"1"
    assert by_source[(1, 2)].header("ackd-dlq-status") == b"500"
    assert by_source[(1, 2)].header("ackd-dlq-attempts") == b"3"
    assert by_source[(0, 1)].header("ackd-dlq-reason") != by_source[(1, 2)].header(
        "ackd-dlq-reason")


def test_a_message_whose_dead_letter_cannot_be_written_is_not_committed(kafka, ackd,
                                                                         webhook_sink):
    """A poison message whose dead letter cannot be encoded (a header name over
    65,535 bytes) stays uncommitted and is retried; the next record the spool
    takes (here an unrelated publish) must not stand in for its dead letter."""
    topic = new_topic(kafka, partitions=1)
    dlq = new_topic(kafka, partitions=1, prefix="dlq")
    other = new_topic(kafka, partitions=1, prefix="other")
    big_name = "h" * 70000

    def respond(req):
        return 400 if coords(req) == (0, 1) else 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq,
                       retry={"initial_ms": 100, "max_ms": 1000, "max_attempts": 3})
    daemon = start_ackd(ackd, sub)
    # One at a time: a retried produce could otherwise swap their offsets.
    for m in ({"value": b"ok-0"}, {"value": b"poison", "headers": [(big_name, b"v")]},
              {"value": b"ok-2"}):
        produce_all(kafka, topic, [m])
    wait_committed(kafka, sub["group"], topic, {0: 1})
    poison_id = coords_id(topic, 0, 1)
    wait_until(lambda: len(attempts_of(webhook_sink, poison_id)) >= 1, 15,
               "the poison message to reach the endpoint")
    # Unrelated records through the spool: before the fix the first of them
    # took the empty dead-letter batch's sequence and its ack committed offset 1.
    for i in range(3):
        r = daemon.http.post(f"/v1/topics/{other}", body=f"unrelated-{i}".encode())
        assert r.status in (200, 202), (r.status, r.body)
        time.sleep(0.5)
    time.sleep(2.5)  # commits run every second
    assert kafka.committed(sub["group"], topic) == {0: 1}
    wait_until(lambda: len(attempts_of(webhook_sink, poison_id)) >= 3, 15,
               "the poison message to be tried again")
    assert kafka.committed(sub["group"], topic) == {0: 1}
    assert kafka.read_topic(dlq) == []
    assert not [r for r in webhook_sink.received() if coords(r) == (0, 2)], \
        "a message after the stuck one was delivered"
    err = daemon.stderr_text()
    assert "cannot be written to " + dlq in err, err[-2000:]
    status = daemon.http.get("/metrics").body.decode()
    assert re.search(r'ackd_webhook_dead_letter_errors_total\{subscription="hook"\} [1-9]',
                     status), status


def test_a_dead_letter_kafka_refuses_is_filed_once_not_on_every_retry(kafka, ackd,
                                                                         webhook_sink):
    """Kafka refuses a poison message's dead letter for good (over the
    dead-letter topic's max.message.bytes): the message stays uncommitted and
    is tried again, and failed/ holds one copy of its dead letter, not one
    per retry (it grew without end). Once the topic takes it, it is written
    and the commit moves on."""
    topic = new_topic(kafka, partitions=1)
    dlq = new_topic(kafka, partitions=1, prefix="dlq", configs={"max.message.bytes": "200"})

    def respond(req):
        return 400 if req.body.startswith(b"poison") else 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq,
                       retry={"initial_ms": 100, "max_ms": 300, "max_attempts": 3})
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"ok-0"}])
    produce_all(kafka, topic, [{"value": b"poison" + b"x" * 1000}])
    produce_all(kafka, topic, [{"value": b"ok-2"}])
    refused = f"dead letter of {topic} [0] offset 1 not acknowledged by kafka"
    wait_until(lambda: daemon.stderr_text().count(refused) >= 4, 30,
               "four dead letters to be refused")

    err = daemon.stderr_text()
    assert err.count("rejected permanently (Broker: Message size too large); moved to "
                     "failed/") == 1, err[-3000:]
    assert err.count("producer: dead letter") >= 3, err[-3000:]
    assert err.count("deleted, not filed") == err.count("producer: dead letter"), err[-3000:]
    metrics = daemon.http.get("/metrics").body.decode()
    assert re.search(r"^ackd_spool_failed_records_total 1$", metrics, re.M), metrics
    wait_committed(kafka, sub["group"], topic, {0: 1})
    deadline = time.time() + 2.5  # commits run every second
    while time.time() < deadline:
        assert kafka.committed(sub["group"], topic) == {0: 1}
        time.sleep(0.5)
    assert not [r for r in webhook_sink.received() if r.body == b"ok-2"], \
        "a message after the stuck one was delivered"

    res = ConfigResource(ResourceType.TOPIC, dlq, incremental_configs=[ConfigEntry(
        "max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)])
    for f in kafka.admin().incremental_alter_configs([res]).values():
        f.result(timeout=30)
    wait_committed(kafka, sub["group"], topic, {0: 3})
    letters = kafka.read_topic(dlq)
    assert letters and all(r.value.startswith(b"poison") for r in letters), letters
    wait_until(lambda: re.search(r"^ackd_spool_records 0$",
                                 daemon.http.get("/metrics").body.decode(), re.M), 15,
               "the deleted dead letters to leave the spool")
    metrics = daemon.http.get("/metrics").body.decode()
    assert re.search(r"^ackd_spool_failed_records_total 1$", metrics, re.M), metrics


def test_a_recreated_topic_is_delivered_from_its_new_start(kafka, ackd, webhook_sink):
    """The topic is deleted and created again under the same name while ackd
    consumes it: its offsets start again below what ackd completed. The new
    messages must be delivered (they used to be dropped as "went back")."""
    topic = new_topic(kafka, partitions=1)
    webhook_sink.respond("/hook", lambda req: 200)
    sub = subscription(topic, webhook_sink)
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"old-{i}".encode()} for i in range(6)])
    wait_committed(kafka, sub["group"], topic, {0: 6})

    kafka.delete_topic(topic)
    kafka.create_topic(topic, partitions=1)
    produce_all(kafka, topic, [{"value": f"new-{i}".encode()} for i in range(3)])

    wait_until(lambda: {r.body for r in webhook_sink.received("/hook")} >=
               {f"new-{i}".encode() for i in range(3)}, 60,
               "the recreated topic's messages to be delivered")
    wait_committed(kafka, sub["group"], topic, {0: 3})


def test_a_recreated_topic_is_delivered_while_an_old_message_is_still_retried(
        kafka, ackd, webhook_sink):
    """As above, but the first message of the old log is still being retried
    when the topic comes back: the new log's offsets then repeat offsets ackd
    still holds. Its records are not the ones taken there, so they are new
    messages, delivered (they used to be dropped as fetched again)."""
    topic = new_topic(kafka, partitions=1)
    recreated = threading.Event()

    def respond(req):
        if req.body == b"old-0" and not recreated.is_set():
            return 503
        return 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, retry={"initial_ms": 200, "max_ms": 500,
                                                   "max_attempts": 0})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"old-{i}".encode()} for i in range(6)])
    wait_until(lambda: len([r for r in webhook_sink.received("/hook")
                            if r.body == b"old-0"]) >= 2, 30, "old-0 to be retried")
    assert kafka.committed(sub["group"], topic).get(0, -1001) < 1

    kafka.delete_topic(topic)
    kafka.create_topic(topic, partitions=1)
    produce_all(kafka, topic, [{"value": f"new-{i}".encode()} for i in range(3)])
    time.sleep(3)  # the consumer meets the new log while old-0 still fails
    recreated.set()

    wait_until(lambda: {r.body for r in webhook_sink.received("/hook") if r.status == 200} >=
               {f"new-{i}".encode() for i in range(3)}, 60,
               "the recreated topic's messages to be delivered")
    wait_committed(kafka, sub["group"], topic, {0: 3})


@pytest.mark.parametrize("differs", ["value", "key"])
def test_a_recreated_topic_with_look_alike_records_is_delivered(
        kafka, ackd, webhook_sink, differs):
    """As above, but the new log's records look like the old ones: the same
    timestamp, key and value lengths, only the bytes of the value (or of the
    key) differ. They are new messages all the same (they used to be taken
    for refetches of the old records, dropped, and their offsets committed)."""
    topic = new_topic(kafka, partitions=1)
    stamp = int(time.time() * 1000) - 60000
    recreated = threading.Event()

    def record(i, new):
        if differs == "value":
            return {"key": b"k", "value": f"{'new' if new else 'old'}-{i}".encode(),
                    "timestamp": stamp}
        return {"key": b"n" if new else b"o", "value": f"msg-{i}".encode(),
                "timestamp": stamp}

    old = [record(i, False) for i in range(6)]
    new = [record(i, True) for i in range(3)]

    def respond(req):
        if coords(req)[1] == 0 and not recreated.is_set():
            return 503
        return 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, retry={"initial_ms": 200, "max_ms": 500,
                                                   "max_attempts": 0})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, old)
    wait_until(lambda: len(attempts_of(webhook_sink, coords_id(topic, 0, 0))) >= 2, 30,
               "the first old record to be retried")
    assert kafka.committed(sub["group"], topic).get(0, -1001) < 1

    kafka.delete_topic(topic)
    kafka.create_topic(topic, partitions=1)
    produce_all(kafka, topic, new)
    time.sleep(3)  # the consumer meets the new log while the old record still fails
    recreated.set()

    def delivered():
        return {(r.header("ackd-key"), r.body) for r in webhook_sink.received("/hook")
                if r.status == 200}
    want = {(pct(m["key"]), m["value"]) for m in new}
    wait_until(lambda: delivered() >= want, 30,
               "the recreated topic's messages to be delivered")
    wait_committed(kafka, sub["group"], topic, {0: 3})


def test_a_log_cut_above_what_completed_still_holds_the_commit(kafka, ackd, webhook_sink):
    """The partition's log comes back shorter than what ackd fetched but
    above what it completed (here a recreated topic and a fetch out of range
    reset to the end; an unclean leader election does the same): ackd has
    old-0..old-5 and old-2 still fails, the new log ends at 4. The record
    fetched at 4 is another one; old-2 and old-3 are below it, so the commit
    must stay at 2 until old-2 is delivered (it used to jump to 4 at once,
    and a stop then would have skipped old-2)."""
    topic = new_topic(kafka, partitions=1)
    release = threading.Event()

    def respond(req):
        return 503 if req.body == b"old-2" and not release.is_set() else 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink, start="latest",
                       retry={"initial_ms": 200, "max_ms": 500, "max_attempts": 0})
    # Stopped below for a few seconds: it must not leave the group meanwhile.
    daemon = start_ackd(ackd, sub, config={"kafka": {"consumer": [
        "session.timeout.ms=30000", "heartbeat.interval.ms=500"]}})
    wait_until(lambda: "assigned 1 partitions" in daemon.stderr_text(), 30,
               "the partition to be assigned")
    time.sleep(1)  # the fetch position is the end, before anything is produced
    produce_all(kafka, topic, [{"value": f"old-{i}".encode()} for i in range(6)])
    wait_until(lambda: len([r for r in webhook_sink.received("/hook")
                            if r.body == b"old-2"]) >= 2, 30, "old-2 to be retried")
    wait_committed(kafka, sub["group"], topic, {0: 2})

    # ackd is stopped while the log is cut, so that the reset to the end it
    # makes when it fetches again finds all four new records: running, it
    # could fetch from the new topic before they were written, and take
    # new-0 for the record at 0, below what it completed.
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        kafka.delete_topic(topic)
        kafka.create_topic(topic, partitions=1)
        produce_all(kafka, topic, [{"value": f"new-{i}".encode()} for i in range(4)])
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    reset = re.compile(r"offset reset \(at offset 6\b.*\) to (offset )?(\w+)")
    wait_until(lambda: reset.search(daemon.stderr_text()), 30,
               "the fetch out of range to be reset")
    assert reset.search(daemon.stderr_text()).group(2) == "END", daemon.stderr_text()[-2000:]
    time.sleep(3)  # the log line comes first, the end offset is asked for after it
    produce_all(kafka, topic, [{"value": b"new-4"}])
    wait_until(lambda: "went back to offset 4 " in daemon.stderr_text(), 30,
               "the record at 4 to be taken for a new one")

    deadline = time.time() + 3  # commits run every second
    while time.time() < deadline:
        got = kafka.committed(sub["group"], topic).get(0, -1001)
        assert got <= 2, f"committed {got} while old-2 is undelivered"
        time.sleep(0.3)
    release.set()
    # Partition order: new-4 waits behind old-2.
    wait_until(lambda: {r.body for r in webhook_sink.received("/hook") if r.status == 200} >=
               {b"old-2", b"new-4"}, 30, "old-2, then new-4 to be delivered")
    wait_committed(kafka, sub["group"], topic, {0: 5})


def test_without_dead_letter_topic_the_partition_blocks(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=3)

    def respond(req):
        p, o = coords(req)
        if (p, o) == (0, 1):
            return 400
        if (p, o) == (1, 1):
            return 503
        return 200
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink,
                       retry={"initial_ms": 100, "max_ms": 1000, "max_attempts": 2})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"b{i}".encode(), "partition": i % 3}
                               for i in range(12)])

    # Partition 2 completes; 0 and 1 stop at their offset 1.
    wait_committed(kafka, sub["group"], topic, {0: 1, 1: 1, 2: 4})
    wait_until(lambda: len(attempts_of(webhook_sink, coords_id(topic, 0, 1))) >= 3
               and len(attempts_of(webhook_sink, coords_id(topic, 1, 1))) >= 4, 15,
               "the blocked messages to be retried")
    time.sleep(1.5)
    got = webhook_sink.received()
    later = [coords(r) for r in got if coords(r)[0] in (0, 1) and coords(r)[1] > 1]
    assert later == [], f"messages after a blocked one were delivered: {later}"
    committed = kafka.committed(sub["group"], topic)
    assert committed == {0: 1, 1: 1, 2: 4}, committed

    for p in (0, 1):
        tries = sorted(attempts_of(webhook_sink, coords_id(topic, p, 1)),
                       key=lambda r: r.started)
        assert [int(r.header("ackd-attempt")) for r in tries] == list(
            range(1, len(tries) + 1))
        # Blocked: retried at retry.max_ms (1 s, -20%).
        blocked_from = 0 if p == 0 else 1
        for prev, nxt in list(zip(tries, tries[1:]))[blocked_from:]:
            assert nxt.started - prev.answered >= 0.8, (p, nxt.started - prev.answered)


def test_410_pauses_the_subscription_until_reload(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=3)
    said_gone = threading.Event()

    def respond(req):
        if coords(req) == (0, 5) and not said_gone.is_set():
            said_gone.set()
            return 410
        return Reply(200, delay=0.02)
    webhook_sink.respond("/hook", respond)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": f"g{i}".encode(), "partition": i % 3}
                               for i in range(90)])

    wait_until(lambda: any(r.status == 410 and r.answered is not None
                           for r in webhook_sink.received()),
               DELIVERY_TIMEOUT, "the 410 answer")
    t410 = next(r.answered for r in webhook_sink.received() if r.status == 410)
    time.sleep(3.5)
    got = webhook_sink.received()
    late = [(coords(r), round(r.started - t410, 3)) for r in got if r.started > t410 + 1.0]
    assert late == [], f"requests after 410: {late}"
    assert len([r for r in got if r.status == 410]) == 1
    assert not any(coords(r)[0] == 0 and coords(r)[1] > 5 for r in got)
    committed = kafka.committed(sub["group"], topic)
    delivered = contiguous_delivered(got, 3)
    print(f"410: {len(got)} requests, committed {committed}, delivered {delivered}")
    assert committed[0] <= 5
    for p in range(3):
        assert committed[p] <= delivered[p] + 1, (p, committed, delivered)

    # SIGHUP reloads the subscription: delivery resumes where it stopped.
    daemon.signal(signal.SIGHUP)
    wait_committed(kafka, sub["group"], topic, {0: 30, 1: 30, 2: 30})
    assert unique_delivered(webhook_sink) == {(p, o) for p in range(3) for o in range(30)}


# --- crashes and scale-out --------------------------------------------------------

def contiguous_delivered(reqs, partitions):
    """{partition: highest offset h with every offset 0..h answered 2xx}, -1 if none."""
    done = {p: set() for p in range(partitions)}
    for r in reqs:
        if 200 <= r.status <= 299:
            p, o = coords(r)
            done[p].add(o)
    out = {}
    for p, offsets in done.items():
        h = -1
        while h + 1 in offsets:
            h += 1
        out[p] = h
    return out


class CommitSampler(threading.Thread):
    """Samples the group's committed offsets, then the sink's contiguous 2xx
    prefix (which only grows), and records any committed offset past it."""

    def __init__(self, kafka, group, topic, sink, partitions):
        super().__init__(daemon=True)
        self.topic, self.sink, self.partitions = topic, sink, partitions
        self.consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group,
                                  "enable.auto.commit": False})
        self.stop_event = threading.Event()
        self.samples = 0
        self.violations = []
        self.errors = []

    def run(self):
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            while not self.stop_event.is_set():
                try:
                    committed = self.consumer.committed(tps, timeout=5)
                except Exception as e:  # a coordinator move: sample again
                    self.errors.append(repr(e))
                    continue
                delivered = contiguous_delivered(self.sink.received(), self.partitions)
                for tp in committed:
                    if tp.offset >= 0 and tp.offset > delivered[tp.partition] + 1:
                        self.violations.append((tp.partition, tp.offset,
                                                delivered[tp.partition]))
                self.samples += 1
                self.stop_event.wait(0.1)
        finally:
            self.consumer.close()

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)


def unique_delivered(sink, path=None):
    return {coords(r) for r in sink.received(path) if 200 <= r.status <= 299}


def test_sigkill_during_delivery_loses_nothing(kafka, ackd, webhook_sink):
    partitions, total = 4, 10_000
    topic = new_topic(kafka, partitions=partitions)
    sub = subscription(topic, webhook_sink)
    produce_all(kafka, topic, [{"value": f"c{i}".encode(), "key": f"k{i % 97}".encode(),
                                "partition": i % partitions} for i in range(total)])
    ends = end_offsets(kafka, topic)
    assert sum(ends.values()) == total
    sampler = CommitSampler(kafka, sub["group"], topic, webhook_sink, partitions)
    sampler.start()
    try:
        daemon = start_ackd(ackd, sub)
        t0 = time.monotonic()
        kills = []
        for threshold in (2500, 6000):
            wait_until(lambda: len(unique_delivered(webhook_sink)) >= threshold,
                       DELIVERY_TIMEOUT, f"{threshold} messages delivered", interval=0.02)
            daemon.kill9()
            # Read after the kill: at most what the dead daemon committed.
            kills.append((time.monotonic(), len(unique_delivered(webhook_sink)),
                          kafka.committed(sub["group"], topic)))
            daemon.start()
        wait_until(lambda: len(unique_delivered(webhook_sink)) >= total, 120,
                   "every message delivered", interval=0.2)
        wait_committed(kafka, sub["group"], topic, ends, timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        sampler.stop()

    got = webhook_sink.received()
    delivered = unique_delivered(webhook_sink)
    assert delivered == {(p, o) for p in range(partitions) for o in range(ends[p])}
    # A message is delivered again only after a kill, and only from the
    # offset the killed daemon had committed on.
    counts = {}
    wrong_dups = []
    for r in sorted(got, key=lambda r: r.started):
        if not 200 <= r.status <= 299:
            continue
        p, o = coords(r)
        counts[(p, o)] = counts.get((p, o), 0) + 1
        if counts[(p, o)] == 1:
            continue
        before = [k for k in kills if k[0] < r.started]
        if not before or o < max(before[-1][2][p], 0):
            wrong_dups.append((p, o, before[-1][2][p] if before else None))
    dups = sum(n - 1 for n in counts.values())
    lag = [n - sum(max(c, 0) for c in committed.values()) for _, n, committed in kills]
    print("committed at the kills:", [k[2] for k in kills])
    print(f"crash test: {total} messages, killed at {[k[1] for k in kills]} delivered "
          f"with {lag} of them not yet committed, {len(got)} requests, {dups} duplicates "
          f"({sum(1 for n in counts.values() if n > 1)} offsets), "
          f"{sampler.samples} commit samples, {elapsed:.1f}s")
    assert wrong_dups == [], (
        f"delivered again without a kill or below the committed offset "
        f"(partition, offset, committed at the kill): {wrong_dups[:10]}")
    assert sampler.samples >= 10
    assert sampler.violations == [], (
        f"committed past an undelivered message (partition, committed, contiguous): "
        f"{sampler.violations[:10]}")


def test_two_instances_share_a_group_and_survive_one_killed(kafka, ackd, webhook_sink):
    partitions, total = 8, 6000
    topic = new_topic(kafka, partitions=partitions)
    webhook_sink.respond("/a", lambda req: Reply(200, delay=0.01))
    webhook_sink.respond("/b", lambda req: Reply(200, delay=0.01))
    group = f"grp-{topic}"
    produce_all(kafka, topic, [{"value": f"s{i}".encode(), "partition": i % partitions}
                               for i in range(total)])
    ends = end_offsets(kafka, topic)
    sampler = CommitSampler(kafka, group, topic, webhook_sink, partitions)
    sampler.start()
    try:
        a = start_ackd(ackd, subscription(topic, webhook_sink, path="/a", group=group))
        webhook_sink.wait_for(300, timeout=DELIVERY_TIMEOUT, path="/a")
        start_ackd(ackd, subscription(topic, webhook_sink, path="/b", group=group))
        webhook_sink.wait_for(100, timeout=DELIVERY_TIMEOUT, path="/b")
        a_parts = {coords(r)[0] for r in webhook_sink.received("/a")}
        b_parts_before = {coords(r)[0] for r in webhook_sink.received("/b")}
        a.kill9()
        killed_at = len(unique_delivered(webhook_sink))
        assert killed_at < total, "the run ended before the kill; slow the sink down"

        wait_until(lambda: len(unique_delivered(webhook_sink)) >= total, 90,
                   "every message delivered", interval=0.2)
        wait_committed(kafka, group, topic, ends, timeout=30)
    finally:
        sampler.stop()
    assert sampler.violations == [], (
        f"committed past an undelivered message (partition, committed, contiguous): "
        f"{sampler.violations[:10]}")
    delivered = unique_delivered(webhook_sink)
    assert delivered == {(p, o) for p in range(partitions) for o in range(ends[p])}
    b_parts = {coords(r)[0] for r in webhook_sink.received("/b")}
    got = webhook_sink.received()
    dups = len([r for r in got if r.status == 200]) - len(delivered)
    print(f"scale-out: a had partitions {sorted(a_parts)}, b {sorted(b_parts_before)} "
          f"before the kill and {sorted(b_parts)} in the end; killed at {killed_at} "
          f"delivered; {dups} duplicates; {sampler.samples} commit samples")
    assert b_parts == set(range(partitions)), "b did not take over a's partitions"
    assert len(b_parts_before) < partitions, "the group never split the partitions"
