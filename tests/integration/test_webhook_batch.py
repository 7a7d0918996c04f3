"""Batched webhook delivery (docs/webhooks.md, "Batches") against a real Kafka
broker and the in-process webhook sink: the JSON body field by field, the
batch webhook-id, retries of the whole batch (and of what is left of it when
a rebalance takes a partition away), 207 with per-message results,
the one-by-one fallback after a poison answer, ordering per mode,
max_wait_ms and max_bytes, and a kill -9 in the middle of it.
"""

import base64
import hashlib
import json
import threading
import time

from kafka import wait_until
from confluent_kafka import KafkaException, Producer

import test_webhook
from test_webhook import (DELIVERY_TIMEOUT, SECRET_A, CommitSampler, assert_signed,
                          coords_id, end_offsets, max_concurrency, new_topic, produce_all,
                          start_ackd, subscription)
from webhook_sink import Reply


def wait_committed(kafka, group, topic, expected, timeout=30):
    """test_webhook's, through a broker that is still electing the group's
    coordinator (a fresh broker answers NOT_COORDINATOR for a while)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return test_webhook.wait_committed(kafka, group, topic, expected,
                                               max(1, deadline - time.monotonic()))
        except KafkaException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.3)


def batch_of(req):
    """The messages of a batch request, as the receiver parses them."""
    assert req.header("Content-Type") == "application/json", req.header("Content-Type")
    body = json.loads(req.body)
    assert list(body) == ["messages"], body
    return body["messages"]


def batch_id(messages):
    """The webhook-id docs/webhooks.md gives a batch of (topic, partition, offset)."""
    text = "".join(f"{t}/{p}/{o}\n" for t, p, o in messages)
    return "batch_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def coords_of(m):
    return m["partition"], m["offset"]


def value_of(m):
    return m["value"].encode() if "value" in m else base64.b64decode(m["value_b64"])


def delivered(sink, path="/hook"):
    """(partition, offset) of every message in a batch that got a 2xx, in order."""
    return [coords_of(m) for r in sink.received(path) if 200 <= r.status <= 299
            for m in batch_of(r)]


class PerMessage:
    """The sink's batch requests as one-message requests (status and
    ackd-partition / ackd-offset), for test_webhook's CommitSampler."""

    class _One:
        def __init__(self, status, m):
            self.status = status
            self._h = {"ackd-partition": str(m["partition"]), "ackd-offset": str(m["offset"])}

        def header(self, name):
            return self._h.get(name)

    def __init__(self, sink):
        self.sink = sink

    def received(self, path=None):
        return [self._One(r.status, m) for r in self.sink.received(path)
                if r.status == 200 for m in batch_of(r)]


def batched(topic, sink, max_messages=10, max_bytes=1048576, max_wait_ms=50, **kw):
    return subscription(topic, sink, batch={"max_messages": max_messages,
                                            "max_bytes": max_bytes,
                                            "max_wait_ms": max_wait_ms}, **kw)


# --- the body ----------------------------------------------------------------

def test_batch_body_field_by_field(kafka, ackd, webhook_sink):
    # retention.ms -1: Kafka would delete the 2024-stamped record at its
    # next retention check, which counts from the record's timestamp.
    topic = new_topic(kafka, configs={"retention.ms": -1})
    msgs = [
        {"value": "text, ünïcode \"quoted\"\n\\".encode(), "key": "k1 ✓".encode(),
         "headers": [("content-type", b"text/plain"), ("ackd-id", b"idfromheader0001")],
         "timestamp": 1733240000000},
        {"value": b"\x00\xff\xfe binary", "key": b"\xc3\x28",
         "headers": [("bin", b"\xff\x00"), ("h", b"plain"), ("h", b"second")]},
        {"value": b"", "key": None, "headers": [("novalue", None)]},
        {"value": "{\"json\": [1, 2]}".encode(), "key": b""},
    ]
    produce_all(kafka, topic, msgs)
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=500, secrets=[SECRET_A])
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 4})

    [req] = webhook_sink.received("/hook")
    got = batch_of(req)
    records = kafka.read_topic(topic)
    assert [coords_of(m) for m in got] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert req.header("webhook-id") == batch_id([(topic, 0, o) for o in range(4)])
    assert req.header("ackd-attempt") == "1"
    assert req.header("ackd-topic") is None, "per-message headers are in the body"
    assert_signed(req, [SECRET_A])
    for m, rec in zip(got, records):
        assert m["topic"] == topic
        assert m["timestamp"] == rec.timestamp
        assert value_of(m) == rec.value
    m0, m1, m2, m3 = got
    assert list(m0) == ["id", "topic", "partition", "offset", "timestamp", "key", "value",
                        "headers"]
    assert m0["id"] == "idfromheader0001"
    assert m0["timestamp"] == 1733240000000
    assert m0["key"] == "k1 ✓" and m0["value"] == msgs[0]["value"].decode()
    assert m0["headers"] == {"content-type": "text/plain", "ackd-id": "idfromheader0001"}
    # Not UTF-8: base64, under another name; a header name that repeats keeps
    # its first value.
    assert m1["id"] == coords_id(topic, 0, 1)
    assert "key" not in m1 and base64.b64decode(m1["key_b64"]) == b"\xc3\x28"
    assert "value" not in m1 and base64.b64decode(m1["value_b64"]) == b"\x00\xff\xfe binary"
    assert m1["headers"] == {"h": "plain"}
    assert {k: base64.b64decode(v) for k, v in m1["headers_b64"].items()} == {
        "bin": b"\xff\x00"}
    # No key: null; empty value: ""; a header without a value: null.
    assert m2["key"] is None and m2["value"] == ""
    assert m2["headers"] == {"novalue": None}
    assert m3["key"] == "" and json.loads(m3["value"]) == {"json": [1, 2]}
    assert m3["headers"] == {}


def test_max_messages_1_sends_the_value_as_the_body(kafka, ackd, webhook_sink):
    """batch.max_messages = 1 (the default) is one message a request, as always."""
    topic = new_topic(kafka)
    produce_all(kafka, topic, [{"value": b"raw \xff", "key": b"k"}])
    sub = batched(topic, webhook_sink, max_messages=1)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 1})
    [req] = webhook_sink.received("/hook")
    assert req.body == b"raw \xff"
    assert req.header("Content-Type") == "application/octet-stream"
    assert req.header("webhook-id") == coords_id(topic, 0, 0)
    assert req.header("ackd-offset") == "0"


# --- answers -----------------------------------------------------------------

def test_a_batch_is_retried_whole_under_the_same_webhook_id(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    webhook_sink.script("/hook", 503, Reply(500), 200)
    produce_all(kafka, topic, [{"value": b"r%d" % i} for i in range(5)])
    sub = batched(topic, webhook_sink, max_messages=5, max_wait_ms=500,
                  secrets=[SECRET_A], retry={"initial_ms": 50, "max_ms": 200})
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 5})
    reqs = webhook_sink.received("/hook")
    assert [r.status for r in reqs] == [503, 500, 200]
    assert len({r.header("webhook-id") for r in reqs}) == 1
    assert [r.header("ackd-attempt") for r in reqs] == ["1", "2", "3"]
    assert all([coords_of(m) for m in batch_of(r)] == [(0, o) for o in range(5)] for r in reqs)
    for r in reqs:
        assert_signed(r, [SECRET_A])
    assert reqs[0].header("webhook-timestamp") <= reqs[2].header("webhook-timestamp")


def test_207_gives_each_message_its_own_outcome(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    produce_all(kafka, topic, [{"value": b"m%d" % i} for i in range(6)])
    first = []

    def respond(req):
        got = batch_of(req)
        if first:
            return 200
        first.append(got)
        ids = [m["id"] for m in got]
        # 0, 3: delivered; 1: retried (500); 2: poison (422); 4: no result;
        # 5: a result without a status. Plus an id that is not in the batch.
        results = [{"id": ids[0], "status": 200}, {"id": ids[1], "status": 500},
                   {"id": ids[2], "status": 422}, {"id": ids[3], "status": 204},
                   {"id": ids[5]}, {"id": "msg_not_in_the_batch", "status": 200}]
        return Reply(207, {"Content-Type": "application/json"},
                     json.dumps({"results": results}).encode())
    webhook_sink.respond("/hook", respond)
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=500, ordering="none",
                  dead_letter_topic=dlq, retry={"initial_ms": 50, "max_ms": 200})
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 6})

    reqs = webhook_sink.received("/hook")
    assert reqs[0].status == 207
    assert [coords_of(m) for m in first[0]] == [(0, o) for o in range(6)]
    again = sorted(coords_of(m) for r in reqs[1:] for m in batch_of(r))
    assert again == [(0, 1), (0, 4), (0, 5)], "only the undelivered ones, never 0, 2, 3"
    dead = kafka.read_topic(dlq)
    assert [(d.value, d.header("ackd-dlq-status")) for d in dead] == [(b"m2", b"422")]


def test_a_poison_answer_sends_the_batch_one_by_one(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    values = [b"ok0", b"ok1", b"poison", b"ok3", b"ok4"]
    produce_all(kafka, topic, [{"value": v} for v in values])
    webhook_sink.respond("/hook", lambda req: 400 if any(
        value_of(m) == b"poison" for m in batch_of(req)) else 200)
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=500,
                  dead_letter_topic=dlq)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 5})

    reqs = webhook_sink.received("/hook")
    assert [len(batch_of(r)) for r in reqs] == [5, 1, 1, 1, 1, 1]
    assert reqs[0].status == 400
    assert [(value_of(batch_of(r)[0]), r.status) for r in reqs[1:]] == [
        (b"ok0", 200), (b"ok1", 200), (b"poison", 400), (b"ok3", 200), (b"ok4", 200)]
    # Each alone carries the id of a batch of one.
    assert reqs[1].header("webhook-id") == batch_id([(topic, 0, 0)])
    dead = kafka.read_topic(dlq)
    assert [(d.value, d.header("ackd-dlq-source-offset")) for d in dead] == [(b"poison", b"2")]


def test_exhausted_retries_dead_letter_the_whole_batch(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    produce_all(kafka, topic, [{"value": b"x%d" % i} for i in range(3)])
    webhook_sink.respond("/hook", lambda req: 503)
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=500,
                  dead_letter_topic=dlq,
                  retry={"initial_ms": 20, "max_ms": 50, "max_attempts": 3})
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: 3})
    reqs = webhook_sink.received("/hook")
    assert [r.header("ackd-attempt") for r in reqs] == ["1", "2", "3"]
    dead = kafka.read_topic(dlq)
    assert sorted((d.value, d.header("ackd-dlq-attempts")) for d in dead) == [
        (b"x0", b"3"), (b"x1", b"3"), (b"x2", b"3")]


def test_exhausted_retries_give_up_only_the_messages_that_used_them(kafka, ackd, webhook_sink):
    """x0 used two attempts (each a 207 saying 503) when it goes again with y1,
    fresh, and the batch gets a 503: x0 has used its 3 attempts and is dead-
    lettered; y1 has used one and is retried, then delivered."""
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    answers = []

    def respond(req):
        got = batch_of(req)
        answers.append([value_of(m) for m in got])
        if len(answers) <= 2:  # x0 alone: retried by its own result
            return Reply(207, {"Content-Type": "application/json"},
                         json.dumps({"results": [{"id": got[0]["id"], "status": 503}]}).encode())
        if len(answers) == 3:
            return 503
        return 200
    webhook_sink.respond("/hook", respond)
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=20,
                  dead_letter_topic=dlq,
                  retry={"initial_ms": 1500, "max_ms": 1500, "max_attempts": 3})
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"x0"}])
    wait_until(lambda: len(answers) >= 2, DELIVERY_TIMEOUT, "x0 to be sent twice")
    produce_all(kafka, topic, [{"value": b"y1"}])  # waits behind x0 (ordering partition)
    wait_committed(kafka, sub["group"], topic, {0: 2})

    assert answers[:3] == [[b"x0"], [b"x0"], [b"x0", b"y1"]], answers
    assert [b"y1"] in answers[3:], answers
    dead = kafka.read_topic(dlq)
    assert [(d.value, d.header("ackd-dlq-attempts")) for d in dead] == [(b"x0", b"3")]


# --- ordering ------------------------------------------------------------------

def slow_sink(sink, delay=0.02):
    sink.respond("/hook", lambda req: Reply(200, delay=delay))


def test_ordering_partition_batches_consecutive_messages_of_one_partition(kafka, ackd,
                                                                         webhook_sink):
    topic = new_topic(kafka, partitions=3)
    slow_sink(webhook_sink)
    n = 300
    produce_all(kafka, topic, [{"value": b"p%d" % i, "partition": i % 3} for i in range(n)])
    sub = batched(topic, webhook_sink, max_messages=7, max_wait_ms=20)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    reqs = sorted(webhook_sink.received("/hook"), key=lambda r: r.started)
    assert all(r.status == 200 for r in reqs)
    by_part = {}
    for r in reqs:
        got = batch_of(r)
        assert 1 <= len(got) <= 7
        [p] = {m["partition"] for m in got}
        offsets = [m["offset"] for m in got]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
        by_part.setdefault(p, []).append((r, offsets))
    for p, rs in by_part.items():
        flat = [o for _, offsets in rs for o in offsets]
        assert flat == list(range(n // 3)), f"partition {p} out of order or repeated"
        for (a, _), (b, _) in zip(rs, rs[1:]):
            assert b.started >= a.answered, "two batches of one partition at once"
    assert max(len(batch_of(r)) for r in reqs) == 7
    assert len(reqs) < n / 2


def test_ordering_key_batches_never_hold_a_key_twice(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    slow_sink(webhook_sink)
    n = 200
    produce_all(kafka, topic, [{"value": b"v%d" % i, "key": b"k%d" % (i % 13)}
                               for i in range(n)])
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=20, ordering="key",
                  max_in_flight=8)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: n})
    reqs = sorted(webhook_sink.received("/hook"), key=lambda r: r.started)
    per_key = {}
    for r in reqs:
        got = batch_of(r)
        keys = [m["key"] for m in got]
        assert len(keys) == len(set(keys)), f"a key twice in one batch: {keys}"
        for m in got:
            per_key.setdefault(m["key"], []).append((m["offset"], r))
    assert sorted(o for v in per_key.values() for o, _ in v) == list(range(n))
    for key, seen in per_key.items():
        assert [o for o, _ in seen] == sorted(o for o, _ in seen), key
        for (_, a), (_, b) in zip(seen, seen[1:]):
            assert b.started >= a.answered, f"key {key} in two requests at once"
    assert max(len(batch_of(r)) for r in reqs) > 1


def test_ordering_none_mixes_partitions(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=4)
    n = 200
    produce_all(kafka, topic, [{"value": b"n%d" % i, "partition": i % 4} for i in range(n)])
    sub = batched(topic, webhook_sink, max_messages=60, max_wait_ms=200, ordering="none")
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    reqs = webhook_sink.received("/hook")
    assert sorted(delivered(webhook_sink)) == sorted(
        (p, o) for p in range(4) for o in range(n // 4))
    assert any(len({m["partition"] for m in batch_of(r)}) > 1 for r in reqs)
    assert all(len(batch_of(r)) <= 60 for r in reqs)


# --- filling a batch -----------------------------------------------------------

def test_max_wait_ms_sends_a_partial_batch(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    wait_ms = 800
    sub = batched(topic, webhook_sink, max_messages=100, max_wait_ms=wait_ms)
    daemon = start_ackd(ackd, sub)
    # Once the partition is assigned, a first message fixes the start.
    produce_all(kafka, topic, [{"value": b"warm-up"}])
    wait_committed(kafka, sub["group"], topic, {0: 1})
    assert daemon  # still running
    t0 = time.monotonic()
    produce_all(kafka, topic, [{"value": b"w%d" % i} for i in range(3)])
    reqs = webhook_sink.wait_for(2, timeout=DELIVERY_TIMEOUT, path="/hook")
    waited = reqs[1].started - t0
    assert [value_of(m) for m in batch_of(reqs[1])] == [b"w0", b"w1", b"w2"]
    print(f"a batch of 3 (max_messages 100, max_wait_ms {wait_ms}) went after {waited:.3f}s")
    assert wait_ms / 1000 * 0.9 <= waited < wait_ms / 1000 + 3


def test_max_bytes_caps_a_batch(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    values = [b"a" * 300] * 10 + [b"B" * 2500] + [b"c" * 300] * 4
    produce_all(kafka, topic, [{"value": v, "key": b"k"} for v in values])
    sub = batched(topic, webhook_sink, max_messages=100, max_bytes=1000, max_wait_ms=300)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: len(values)})
    sizes = []
    for r in webhook_sink.received("/hook"):
        got = batch_of(r)
        size = sum(len(value_of(m)) + len(m["key"]) for m in got)
        sizes.append((len(got), size))
        assert size <= 1000 or len(got) == 1, (len(got), size)
    assert (1, 2501) in sizes, "the large message goes alone"
    assert max(n for n, _ in sizes) == 3, sizes
    assert sorted(delivered(webhook_sink)) == [(0, o) for o in range(len(values))]


# --- pace ------------------------------------------------------------------------

def test_rate_limit_counts_messages_of_a_batch(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    rate, n = 50, 200
    produce_all(kafka, topic, [{"value": b"r%d" % i} for i in range(n)])
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=0, rate_limit=rate)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, {0: n})
    reqs = sorted(webhook_sink.received("/hook"), key=lambda r: r.started)
    span = reqs[-1].started - reqs[0].started
    measured = (n - len(batch_of(reqs[-1]))) / span
    print(f"rate_limit {rate}: {n} messages in {len(reqs)} batches, {measured:.1f} messages/s")
    assert measured <= rate * 1.2
    assert measured >= rate * 0.5


def test_a_batch_is_one_request_in_the_window(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=4)
    n = 400
    webhook_sink.respond("/hook", lambda req: Reply(200, delay=0.05))
    produce_all(kafka, topic, [{"value": b"w%d" % i, "partition": i % 4} for i in range(n)])
    sub = batched(topic, webhook_sink, max_messages=10, max_wait_ms=0, ordering="none",
                  max_in_flight=2)
    start_ackd(ackd, sub)
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    reqs = webhook_sink.received("/hook")
    assert max_concurrency(reqs) == 2, "max_in_flight counts requests, not messages"
    assert max(len(batch_of(r)) for r in reqs) == 10
    assert sorted(delivered(webhook_sink)) == sorted(
        (p, o) for p in range(4) for o in range(n // 4))


# --- crash ---------------------------------------------------------------------

def test_sigkill_during_batched_delivery_loses_nothing(kafka, ackd, webhook_sink):
    partitions, total = 4, 8000
    topic = new_topic(kafka, partitions=partitions)
    webhook_sink.respond("/hook", lambda req: Reply(200, delay=0.05))
    sub = batched(topic, webhook_sink, max_messages=20, max_wait_ms=10)
    produce_all(kafka, topic, [{"value": f"c{i}".encode(), "partition": i % partitions}
                               for i in range(total)])
    ends = end_offsets(kafka, topic)
    sampler = CommitSampler(kafka, sub["group"], topic, PerMessage(webhook_sink), partitions)
    sampler.start()
    kills = []
    try:
        daemon = start_ackd(ackd, sub)
        for threshold in (2000, 5000):
            wait_until(lambda: len(set(delivered(webhook_sink))) >= threshold,
                       DELIVERY_TIMEOUT, f"{threshold} messages delivered", interval=0.02)
            daemon.kill9()
            kills.append((time.monotonic(), len(set(delivered(webhook_sink))),
                          kafka.committed(sub["group"], topic)))
            daemon.start()
        wait_until(lambda: len(set(delivered(webhook_sink))) >= total, 120,
                   "every message delivered", interval=0.2)
        wait_committed(kafka, sub["group"], topic, ends, timeout=30)
    finally:
        sampler.stop()
    got = delivered(webhook_sink)
    assert set(got) == {(p, o) for p in range(partitions) for o in range(ends[p])}
    # Delivered again only after a kill, and only at or above what the killed
    # daemon had committed.
    counts, wrong = {}, []
    for r in sorted(webhook_sink.received("/hook"), key=lambda r: r.started):
        if r.status != 200:
            continue
        for m in batch_of(r):
            p, o = coords_of(m)
            counts[(p, o)] = counts.get((p, o), 0) + 1
            if counts[(p, o)] == 1:
                continue
            before = [k for k in kills if k[0] < r.started]
            if not before or o < max(before[-1][2][p], 0):
                wrong.append((p, o))
    print(f"batched crash test: {total} messages, killed at {[k[1] for k in kills]}, "
          f"{len(webhook_sink.received())} requests, "
          f"{sum(n - 1 for n in counts.values())} duplicates")
    assert wrong == [], wrong[:10]
    assert any(c > 0 for _, _, committed in kills for c in committed.values()), (
        "nothing was committed before the kills: slow the sink down")
    assert sampler.samples >= 10
    assert sampler.violations == [], (
        f"committed past an undelivered message (partition, committed, contiguous): "
        f"{sampler.violations[:10]}")


def test_mixed_batches_survive_a_rebalance_and_a_kill(kafka, ackd, webhook_sink):
    """ordering = none: batches hold several partitions, so a rebalance that
    moves some of them leaves batches half on partitions that left (their
    answers dropped for those, delivered again by the new owner), and the
    kill of the first instance leaves the rest to the second. Messages are
    produced slowly, one per partition at a time, so that batches mix."""
    partitions, total = 8, 4000
    topic = new_topic(kafka, partitions=partitions)
    for path in ("/a", "/b"):
        webhook_sink.respond(path, lambda req: Reply(200, delay=0.02))
    group = f"grp-{topic}"
    sampler = CommitSampler(kafka, group, topic, PerMessage(webhook_sink), partitions)
    producer_error = []

    def produce_slowly():
        """About 200 messages a second for 20 s, one per partition in turn."""
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 1})

        def on_delivery(err, msg):
            if err is not None:
                producer_error.append(err)
        try:
            for i in range(0, total, partitions):
                for j in range(i, i + partitions):
                    producer.produce(topic, value=f"s{j}".encode(), partition=j % partitions,
                                     on_delivery=on_delivery)
                producer.poll(0)
                time.sleep(0.04)
            if producer.flush(60) != 0:
                producer_error.append("messages left unacknowledged")
        except Exception as e:  # reported by the test below
            producer_error.append(e)

    def sub(path):
        return batched(topic, webhook_sink, path=path, group=group, ordering="none",
                       max_messages=50, max_wait_ms=50, max_in_flight=2)

    def all_of():
        return set(delivered(webhook_sink, "/a") + delivered(webhook_sink, "/b"))

    a = start_ackd(ackd, sub("/a"))
    producer = threading.Thread(target=produce_slowly, daemon=True)
    producer.start()
    sampler.start()
    try:
        wait_until(lambda: len(delivered(webhook_sink, "/a")) >= 300, DELIVERY_TIMEOUT,
                   "a delivering")
        start_ackd(ackd, sub("/b"))
        wait_until(lambda: len(delivered(webhook_sink, "/b")) >= 100, DELIVERY_TIMEOUT,
                   "b delivering")
        b_before = {p for p, _ in delivered(webhook_sink, "/b")}
        a.kill9()
        killed_at = len(all_of())
        producer.join(timeout=120)
        assert not producer_error, producer_error
        ends = end_offsets(kafka, topic)
        assert sum(ends.values()) == total
        wait_until(lambda: len(all_of()) >= total, 120, "every message delivered",
                   interval=0.2)
        wait_committed(kafka, group, topic, ends, timeout=30)
    finally:
        sampler.stop()
    mixed = sum(1 for r in webhook_sink.received("/a")
                if len({m["partition"] for m in batch_of(r)}) > 1)
    assert all_of() == {(p, o) for p in range(partitions) for o in range(ends[p])}
    assert sampler.violations == [], sampler.violations[:10]
    assert killed_at < total, "the run ended before the kill"
    assert mixed > 0, "no batch of a held several partitions"
    assert len(b_before) < partitions, "the group never split the partitions"
    print(f"rebalance with batches: {mixed} mixed batches at a, b had {sorted(b_before)} "
          f"before the kill; killed at {killed_at} delivered")


def test_a_batch_that_loses_a_partition_is_retried_under_a_new_webhook_id(kafka, ackd,
                                                                          webhook_sink):
    """ordering = none: a batch of two partitions is out when a second
    instance joins the group and one of the partitions moves to it; the sink
    holds that request open until the move is done, then answers 503. The
    moved partition's messages are the new owner's; the rest is retried as a
    smaller batch under the id of what it now holds, not under the first
    attempt's id, which named messages it no longer carries."""
    topic = new_topic(kafka, partitions=2)
    group = f"grp-{topic}"
    produce_all(kafka, topic, [{"value": b"m%d" % i, "partition": i % 2} for i in range(6)])
    moved = threading.Event()
    held = []

    def respond_a(req):
        if held:
            return 200
        held.append(req)
        moved.wait(DELIVERY_TIMEOUT)  # until one of its partitions has left a
        return 503
    webhook_sink.respond("/a", respond_a)

    def sub(path):
        return batched(topic, webhook_sink, path=path, group=group, ordering="none",
                       max_messages=10, max_wait_ms=1000, timeout_ms=30000,
                       retry={"initial_ms": 50, "max_ms": 200})

    def assigned(daemon):
        r = daemon.http.get("/v1/status")
        return r.json()["subscriptions"][0]["assigned_partitions"] if r.status == 200 else -1

    a = start_ackd(ackd, sub("/a"))
    wait_until(lambda: held, DELIVERY_TIMEOUT, "a's first batch")
    first = [coords_of(m) for m in batch_of(held[0])]
    assert sorted(first) == [(p, o) for p in range(2) for o in range(3)], first
    try:
        b = start_ackd(ackd, sub("/b"))
        wait_until(lambda: assigned(a) == 1 and assigned(b) == 1, DELIVERY_TIMEOUT,
                   "one partition to move from a to b")
    finally:
        moved.set()
    wait_committed(kafka, group, topic, {0: 3, 1: 3})

    reqs = webhook_sink.received("/a")
    assert [r.status for r in reqs] == [503, 200], [r.status for r in reqs]
    [gone] = {p for p, _ in delivered(webhook_sink, "/b")}
    retried = [coords_of(m) for m in batch_of(reqs[1])]
    assert retried == [(p, o) for p, o in first if p != gone], (first, gone, retried)
    assert reqs[0].header("webhook-id") == batch_id([(topic, p, o) for p, o in first])
    assert reqs[1].header("webhook-id") == batch_id([(topic, p, o) for p, o in retried]), \
        "the retry carries the id of the batch it was, not of what it holds"
    assert reqs[1].header("webhook-id") != reqs[0].header("webhook-id")
    assert reqs[1].header("ackd-attempt") == "2"
    assert sorted(delivered(webhook_sink, "/b")) == [(gone, o) for o in range(3)]
