"""Operations as docs/operations.md and ackd(8) describe them: /metrics, /v1/status,
/healthz, /readyz, reload on SIGHUP, the SIGTERM shutdown order and the
service manager's STATUS= lines.

Each metric is read after driving the behaviour it counts, from a daemon that
started fresh for the test, so counters are compared with exact values where
the test controls every event, and with lower bounds where Kafka or the
clock adds events of its own. Faults (an unreachable Kafka) use librdkafka's
mock cluster, whose brokers can be taken down and up again in an instant; the
session's real broker is never disturbed.
"""

import base64
import ctypes
import errno
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from kafka import wait_until
from test_systemd import NotifySocket
import ackd_proc
from ackd_proc import Ackd, find_ackd, project_version, system_librdkafka_version
from webhook_sink import Reply

CONSUMER_SETTINGS = ["session.timeout.ms=6000", "heartbeat.interval.ms=500"]
KAFKA_REASON = "kafka did not answer a metadata request in the last 15 s"
SPOOL_FULL_REASON = "the spool is full (spool.max_bytes)"
SPOOL_MIN_BYTES = 1048576  # the smallest spool.max_bytes ackd takes
DELIVERY_TIMEOUT = 60
BACKLOG = 5200  # over the consumer's window of 2500 messages per partition
LATE = 300      # produced once ackd and librdkafka both hold all they take


# --- the Prometheus text format ---------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\["\\n])*"'
LABELS = rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})*)?\}}"
NUMBER = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)"
SAMPLE_RE = re.compile(rf"^({NAME})({LABELS})? ({NUMBER})(?: -?\d+)?$")
HELP_RE = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE_RE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
LABEL_RE = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)=({LABEL_VALUE})')


def unescape(quoted):
    out, i, s = [], 0, quoted[1:-1]
    while i < len(s):
        if s[i] == "\\":
            out.append({"n": "\n", "\\": "\\", '"': '"'}[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


class Metrics:
    """One scrape, parsed and checked line by line:

    - every line is a HELP, a TYPE or a sample of the text format 0.0.4;
    - every family has exactly one HELP and one TYPE, both before its samples,
      and its samples are contiguous;
    - every name starts with ackd_, counters end in _total;
    - histograms have cumulative buckets ending in le="+Inf" equal to _count.
    """

    def __init__(self, text):
        self.text = text
        self.samples = {}   # (name, frozenset(labels.items())) -> float
        self.types = {}     # family -> type
        self.helps = {}     # family -> help text
        self.order = []     # families in order of appearance
        assert text.endswith("\n"), "the exposition ends with a newline"
        current = None
        done = set()
        for lineno, line in enumerate(text.split("\n")[:-1], 1):
            where = f"line {lineno}: {line!r}"
            assert line, f"{where}: empty line"
            m = HELP_RE.match(line)
            if m:
                fam = m.group(1)
                assert fam not in self.helps, f"{where}: second HELP"
                assert fam not in done, f"{where}: HELP after the family's samples"
                self.helps[fam] = m.group(2)
                current = fam
                continue
            m = TYPE_RE.match(line)
            if m:
                fam = m.group(1)
                assert fam not in self.types, f"{where}: second TYPE"
                assert fam not in done, f"{where}: TYPE after the family's samples"
                assert self.helps.get(fam) is not None, f"{where}: TYPE before HELP"
                self.types[fam] = m.group(2)
                self.order.append(fam)
                current = fam
                continue
            assert not line.startswith("#"), f"{where}: a comment that is neither HELP nor TYPE"
            m = SAMPLE_RE.match(line)
            assert m, f"{where}: not a valid sample line"
            name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
            fam = self.family_of(name)
            assert fam == current, f"{where}: sample of {fam} outside its family ({current})"
            labels = {k: unescape(v) for k, v in LABEL_RE.findall(labels_text)}
            assert len(labels) == len(LABEL_RE.findall(labels_text)), f"{where}: repeated label"
            key = (name, frozenset(labels.items()))
            assert key not in self.samples, f"{where}: duplicate series"
            self.samples[key] = float(value)
            done.add(fam)
        for fam, typ in self.types.items():
            assert fam.startswith("ackd_"), f"{fam}: every name is prefixed ackd_"
            assert fam in self.helps and self.helps[fam].strip(), f"{fam}: no HELP text"
            if typ == "counter":
                assert fam.endswith("_total"), f"counter {fam} does not end in _total"
            assert any(self.family_of(n) == fam for n, _ in self.samples), f"{fam}: no samples"
        for fam, typ in self.types.items():
            if typ == "histogram":
                self._check_histogram(fam)

    def family_of(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        raise AssertionError(f"sample {name} has no TYPE line before it")

    def _check_histogram(self, fam):
        groups = {}
        for (name, labels), value in self.samples.items():
            if name != fam + "_bucket":
                continue
            d = dict(labels)
            le = d.pop("le")
            groups.setdefault(frozenset(d.items()), []).append((le, value))
        assert groups, f"{fam}: no buckets"
        for rest, buckets in groups.items():
            bounds = [(math.inf if le == "+Inf" else float(le), v) for le, v in buckets]
            bounds.sort()
            assert bounds[-1][0] == math.inf, f"{fam}{dict(rest)}: no +Inf bucket"
            counts = [v for _, v in bounds]
            assert counts == sorted(counts), f"{fam}{dict(rest)}: buckets not cumulative"
            count = self.samples[(fam + "_count", rest)]
            assert counts[-1] == count, f"{fam}{dict(rest)}: +Inf {counts[-1]} != _count {count}"
            assert self.samples[(fam + "_sum", rest)] >= 0

    def get(self, name, **labels):
        """The value of one series; raises KeyError when it is absent."""
        return self.samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]

    def has(self, name, **labels):
        return (name, frozenset((k, str(v)) for k, v in labels.items())) in self.samples

    def series(self, name):
        """{frozenset(labels): value} of every series of name."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def scrape(daemon):
    r = daemon.http.get("/metrics")
    assert r.status == 200, r.body
    assert r.header("content-type").startswith("text/plain; version=0.0.4")
    return Metrics(r.body.decode())


def status_doc(daemon):
    r = daemon.http.get("/v1/status")
    assert r.status == 200, r.body
    assert r.header("content-type").startswith("application/json")
    return r.json()


def check_status_shape(doc):
    """The GET /v1/status document of docs/http-api.md: spool, kafka, subscriptions."""
    assert set(doc) == {"version", "librdkafka", "spool", "kafka", "subscriptions"}, doc
    # ackd's version and that of the system's librdkafka it runs on.
    assert doc["version"] == project_version(), doc
    assert doc["librdkafka"] == system_librdkafka_version(), doc
    spool = doc["spool"]
    assert {"records", "bytes", "oldest_age_seconds"} <= set(spool), spool
    for k in ("records", "bytes"):
        assert isinstance(spool[k], int) and spool[k] >= 0, spool
    assert isinstance(spool["oldest_age_seconds"], (int, float))
    assert spool["oldest_age_seconds"] >= 0
    kafka = doc["kafka"]
    assert {"reachable", "brokers_up", "producer"} <= set(kafka), kafka
    assert isinstance(kafka["reachable"], bool)
    assert isinstance(kafka["brokers_up"], int) and kafka["brokers_up"] >= 0
    assert isinstance(kafka["producer"], dict) and isinstance(kafka["producer"]["state"], str)
    for sub in doc["subscriptions"]:
        assert {"name", "assigned_partitions", "lag", "in_flight", "retrying",
                "dead_lettered"} <= set(sub), sub
        assert sub["lag"] is None or (isinstance(sub["lag"], int) and sub["lag"] >= 0)
        for k in ("assigned_partitions", "in_flight", "retrying", "dead_lettered"):
            assert isinstance(sub[k], int) and sub[k] >= 0, sub


def sub_status(doc, name):
    found = [s for s in doc["subscriptions"] if s["name"] == name]
    assert len(found) == 1, doc
    return found[0]


def readyz(client_or_daemon):
    r = client_or_daemon.http.get("/readyz") if hasattr(client_or_daemon, "http") \
        else client_or_daemon.get("/readyz")
    body = r.json()
    if r.status == 200:
        assert body == {"status": "ready"}, body
    else:
        assert r.status == 503, (r.status, body)
        assert body["status"] == "not_ready" and isinstance(body["reasons"], list), body
        assert body["reasons"] and all(isinstance(x, str) and x for x in body["reasons"])
        assert r.header("retry-after") is not None
    return r.status, body


def wait_for(predicate, timeout, what, daemon=None, interval=0.1):
    wait_until(predicate, timeout, what, interval=interval,
               alive=daemon.check_alive if daemon is not None else None)


def new_topic(kafka, partitions=1, prefix="ops", configs=None):
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=partitions, configs=configs)
    return name


def subscription(name, topic, sink, path, **overrides):
    sub = {
        "name": name,
        "topics": [topic],
        "group": f"grp-{name}-{topic}",
        "url": sink.url(path),
        "timeout_ms": 5000,
        "retry": {"initial_ms": 100, "max_ms": 500, "max_attempts": 10,
                  "max_retry_after_ms": 5000},
    }
    retry = overrides.pop("retry", {})
    sub.update(overrides)
    sub["retry"] = {**sub["retry"], **retry}
    return sub


def log_lines(daemon, pattern):
    rx = re.compile(pattern)
    return [line for line in daemon.stderr_text().splitlines() if rx.search(line)]


def wait_log(daemon, pattern, timeout=30, count=1):
    wait_for(lambda: len(log_lines(daemon, pattern)) >= count, timeout,
             f"{count} log line(s) matching {pattern!r}", daemon)


def produce_values(kafka, topic, values, partition=0):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5})
    errors = []
    for v in values:
        while True:
            try:
                p.produce(topic, value=v, partition=partition,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(30) == 0 and not errors, errors


def publish(daemon, topic, body, **query):
    q = ("?" + urllib.parse.urlencode(query)) if query else ""
    return daemon.http.post(f"/v1/topics/{topic}{q}", body=body)


# --- metrics: publish, spool, produce ----------------------------------------

def test_publish_metrics_count_each_answer_and_exposition_is_valid(kafka, ackd):
    """Every publish answer is counted under its status; records, spool
    commits, fsyncs, deliveries and permanent rejections each in their family."""
    topic = new_topic(kafka, partitions=2)
    small = new_topic(kafka, configs={"max.message.bytes": 2048})
    daemon = ackd(config={"limits": {"max_body_bytes": 65536, "max_batch_records": 3}})

    before = scrape(daemon)
    for status in ("200", "202", "207", "400", "404", "413", "415", "507", "other"):
        assert before.get("ackd_publish_requests_total", status=status) == 0
    assert before.get("ackd_publish_records_total") == 0
    assert before.get("ackd_spool_fsync_seconds_count") == 0
    assert before.get("ackd_spool_records") == 0
    assert before.get("ackd_produce_delivered_total") == 0

    answers = []
    # 200 x3: delivered (ack=kafka is the default).
    for i in range(3):
        r = publish(daemon, topic, f"v{i}".encode(), key=f"k{i}")
        assert r.status == 200, r.body
        answers.append(r)
    # 202 x2: durable in the spool.
    for i in range(2):
        r = publish(daemon, topic, f"s{i}".encode(), ack="spool")
        assert r.status == 202, r.body
    # 200 batch of 3 records.
    r = daemon.http.post(f"/v1/topics/{topic}/records",
                         body={"records": [{"value": "b0"}, {"value": "b1"}, {"value": "b2"}]})
    assert r.status == 200, r.body
    # 400: a bad ack, a bad partition.
    assert publish(daemon, topic, b"x", ack="maybe").status == 400
    assert publish(daemon, topic, b"x", partition="abc").status == 400
    # 404: Kafka says the topic does not exist.
    r = publish(daemon, f"no-such-{uuid.uuid4().hex[:8]}", b"x")
    assert r.status == 404 and r.json()["error"]["code"] == "unknown_topic", r.body
    # 413: over limits.max_body_bytes; a batch over limits.max_batch_records.
    assert publish(daemon, topic, b"z" * 70000).status == 413
    r = daemon.http.post(f"/v1/topics/{topic}/records",
                         body={"records": [{"value": str(i)} for i in range(4)]})
    assert r.status == 413, r.body
    # 415: a batch that is not JSON.
    r = daemon.http.post(f"/v1/topics/{topic}/records", body=b"{}",
                         headers={"Content-Type": "text/plain"})
    assert r.status == 415, r.body
    # 207: one record of the batch is too large for the topic (max.message.bytes).
    big = os.urandom(6000).hex()
    r = daemon.http.post(f"/v1/topics/{small}/records",
                         body={"records": [{"value": "fits"}, {"value": big}]})
    assert r.status == 207, r.body
    assert [e["status"] for e in r.json()["results"]] == ["delivered", "failed"], r.body

    # The spooled ones reach Kafka too: wait until the spool is empty.
    wait_for(lambda: scrape(daemon).get("ackd_spool_records") == 0, 30,
             "the spool to drain", daemon)
    m = scrape(daemon)
    want = {"200": 4, "202": 2, "207": 1, "400": 2, "404": 1, "413": 2, "415": 1,
            "401": 0, "403": 0, "405": 0, "409": 0, "422": 0, "500": 0, "503": 0, "507": 0,
            "other": 0}
    got = {dict(labels)["status"]: v
           for labels, v in m.series("ackd_publish_requests_total").items()}
    assert got == want
    # Accepted records: 3 + 2 + 3 + 2 (the rejected one was accepted first).
    assert m.get("ackd_publish_records_total") == 10
    assert m.get("ackd_produce_delivered_total") == 9
    assert m.get("ackd_produce_failed_total") == 1
    assert m.get("ackd_spool_failed_records_total") == 1
    assert m.get("ackd_produce_in_flight") == 0
    assert m.get("ackd_produce_requeued_total") == 0
    assert m.get("ackd_produce_possible_duplicates_total") == 0
    assert m.get("ackd_producer_rebuilds_total") == 0
    assert m.get("ackd_spool_records") == 0
    assert m.get("ackd_spool_oldest_age_seconds") == 0
    assert m.get("ackd_spool_bytes") > 0
    assert m.get("ackd_spool_segments") >= 1
    assert m.get("ackd_spool_damaged_records_total") == 0
    assert m.get("ackd_spool_write_errors_total") == 0
    assert m.get("ackd_kafka_reachable") == 1
    assert m.get("ackd_kafka_brokers_up") == 1
    assert m.get("ackd_build_info", version=project_version(),
                 librdkafka=system_librdkafka_version()) == 1
    assert len(m.series("ackd_build_info")) == 1
    # One group commit per accepted request at least (they came one by one),
    # each with one fdatasync.
    commits = m.get("ackd_spool_commits_total")
    assert commits >= 7
    assert m.get("ackd_spool_fsync_seconds_count") >= commits
    assert m.get("ackd_spool_fsync_seconds_sum") > 0
    # Families a daemon without subscriptions has not: none of theirs.
    assert not any(f.startswith(("ackd_webhook", "ackd_consumer")) for f in m.types)

    # Another commit, another fdatasync.
    assert publish(daemon, topic, b"again", ack="spool").status == 202
    wait_for(lambda: scrape(daemon).get("ackd_spool_records") == 0, 30,
             "the spool to drain", daemon)
    m2 = scrape(daemon)
    assert m2.get("ackd_spool_commits_total") >= commits + 1
    assert m2.get("ackd_spool_fsync_seconds_count") >= m.get("ackd_spool_fsync_seconds_count") + 1
    assert m2.get("ackd_publish_requests_total", status="202") == 3
    assert m2.get("ackd_publish_records_total") == 11

    doc = status_doc(daemon)
    check_status_shape(doc)
    assert doc["spool"]["records"] == 0 and doc["spool"]["oldest_age_seconds"] == 0
    assert doc["spool"]["bytes"] == m2.get("ackd_spool_bytes")
    assert doc["spool"]["failed"] == 1
    assert doc["kafka"]["reachable"] is True
    assert doc["kafka"]["brokers_up"] == 1
    assert doc["kafka"]["producer"] == {"state": "ok", "in_flight": 0, "delivered": 10,
                                        "failed": 1}
    assert doc["subscriptions"] == []


def test_produce_latency_and_error_families_count_acks_and_rejections(kafka, ackd):
    """ackd_produce_latency_seconds counts Kafka's acks; ackd_produce_errors_total
    counts a permanent rejection under reason="rejected" (metrics.h)."""
    topic = new_topic(kafka)
    small = new_topic(kafka, configs={"max.message.bytes": 2048})
    daemon = ackd()
    for i in range(4):
        assert publish(daemon, topic, f"m{i}".encode()).status == 200
    r = publish(daemon, small, os.urandom(6000))
    assert r.status == 413, r.body
    m = scrape(daemon)
    assert m.get("ackd_produce_delivered_total") == 4
    assert m.get("ackd_produce_failed_total") == 1
    assert m.get("ackd_produce_latency_seconds_count") == 4
    assert m.get("ackd_produce_latency_seconds_sum") > 0
    assert m.get("ackd_produce_errors_total", reason="rejected") == 1
    assert m.get("ackd_produce_errors_total", reason="timeout") == 0
    assert m.get("ackd_produce_errors_total", reason="fatal") == 0


# --- metrics: webhooks ----------------------------------------------------------

def test_webhook_metrics_by_subscription_and_status_class(kafka, ackd, webhook_sink):
    """Four subscriptions, each driving one outcome: delivered at once,
    delivered after 5xx retries, dead-lettered after a 400, dropped after its
    attempts ran out."""
    topics = {n: new_topic(kafka, partitions=2) for n in ("ok", "retry", "poison", "drop")}
    dlq = new_topic(kafka)
    webhook_sink.script("/retry", 500, 500, Reply(503, delay=0.05))
    webhook_sink.respond("/poison", lambda req: 400)
    webhook_sink.respond("/drop", lambda req: 500)
    subs = [
        subscription("ok", topics["ok"], webhook_sink, "/ok"),
        subscription("retry", topics["retry"], webhook_sink, "/retry"),
        subscription("poison", topics["poison"], webhook_sink, "/poison",
                     dead_letter_topic=dlq),
        subscription("drop", topics["drop"], webhook_sink, "/drop", on_exhausted="drop",
                     retry={"max_attempts": 3}),
    ]
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=subs)
    wait_log(daemon, r"subscription drop: assigned 2 partitions")
    for name in ("ok", "retry", "poison"):
        wait_log(daemon, rf"subscription {name}: assigned 2 partitions")

    produce_values(kafka, topics["ok"], [b"o0", b"o1", b"o2"], partition=0)
    produce_values(kafka, topics["ok"], [b"o3", b"o4"], partition=1)
    produce_values(kafka, topics["retry"], [b"r0"], partition=0)
    produce_values(kafka, topics["poison"], [b"p0", b"p1"], partition=1)
    produce_values(kafka, topics["drop"], [b"d0"], partition=0)
    used = {"ok": (0, 1), "retry": (0,), "poison": (1,), "drop": (0,)}

    def settled():
        # Lag 0 alone can be seen before a partition's first fetch; wait for
        # each subscription's last outcome too.
        doc = status_doc(daemon)
        if not all(s["lag"] == 0 for s in doc["subscriptions"]):
            return False
        m = scrape(daemon)

        def val(name, sub):
            return m.get(name, subscription=sub) if m.has(name, subscription=sub) else 0

        return (val("ackd_webhook_delivered_total", "ok") == 5 and
                val("ackd_webhook_delivered_total", "retry") == 1 and
                val("ackd_webhook_dead_lettered_total", "poison") == 2 and
                val("ackd_webhook_dropped_total", "drop") == 1)

    wait_for(settled, DELIVERY_TIMEOUT, "every subscription to commit everything", daemon,
             interval=0.3)
    m = scrape(daemon)

    def reqs(sub):
        return {dict(labels)["status"]: v
                for labels, v in m.series("ackd_webhook_requests_total").items()
                if dict(labels)["subscription"] == sub}

    zero = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "error": 0, "other": 0}
    assert reqs("ok") == {**zero, "2xx": 5}
    assert reqs("retry") == {**zero, "2xx": 1, "5xx": 3}
    assert reqs("poison") == {**zero, "4xx": 2}
    assert reqs("drop") == {**zero, "5xx": 3}
    for sub, n in (("ok", 5), ("retry", 4), ("poison", 2), ("drop", 3)):
        assert m.get("ackd_webhook_latency_seconds_count", subscription=sub) == n
    # The 503 was held back 50 ms by the sink.
    assert m.get("ackd_webhook_latency_seconds_sum", subscription="retry") >= 0.05
    assert m.get("ackd_webhook_latency_seconds_bucket", subscription="retry", le="0.025") <= 3

    expect = {  # delivered, retries, dead-lettered, dropped
        "ok": (5, 0, 0, 0), "retry": (1, 3, 0, 0), "poison": (0, 0, 2, 0), "drop": (0, 2, 0, 1)}
    for sub, (delivered, retries, dead, dropped) in expect.items():
        assert m.get("ackd_webhook_delivered_total", subscription=sub) == delivered, sub
        assert m.get("ackd_webhook_retries_total", subscription=sub) == retries, sub
        assert m.get("ackd_webhook_dead_lettered_total", subscription=sub) == dead, sub
        assert m.get("ackd_webhook_dropped_total", subscription=sub) == dropped, sub
        assert m.get("ackd_webhook_in_flight", subscription=sub) == 0
        assert m.get("ackd_webhook_retrying", subscription=sub) == 0
        assert m.get("ackd_consumer_assigned_partitions", subscription=sub) == 2
        assert m.get("ackd_consumer_paused_partitions", subscription=sub) == 0
        assert m.get("ackd_subscription_paused", subscription=sub) == 0
        for p in used[sub]:
            assert m.get("ackd_consumer_lag", subscription=sub, topic=topics[sub],
                         partition=p) == 0
    assert len(kafka.read_topic(dlq)) == 2

    doc = status_doc(daemon)
    check_status_shape(doc)
    assert [s["name"] for s in doc["subscriptions"]] == ["ok", "retry", "poison", "drop"]
    for sub, (delivered, _, dead, _) in expect.items():
        s = sub_status(doc, sub)
        assert s["assigned_partitions"] == 2 and s["lag"] == 0
        assert s["in_flight"] == 0 and s["retrying"] == 0 and s["paused"] is False
        assert s["delivered"] == delivered and s["dead_lettered"] == dead


def test_lag_in_flight_and_paused_partitions_while_the_endpoint_blocks(kafka, ackd,
                                                                      webhook_sink):
    """The endpoint stops answering: the partition's window fills (PART_WINDOW,
    2500 fetched, unfinished messages) and nothing more is taken; lag and in_flight show it,
    also for messages that arrive once librdkafka stopped fetching the partition (its
    queue is over queued.min.messages, so no fetch brings the new end of the log);
    once it answers again everything drains."""
    topic = new_topic(kafka)
    release = threading.Event()
    blocking = threading.Event()
    entered = []

    def respond(req):
        entered.append(req.body)
        if blocking.is_set():
            release.wait(60)
        return 200

    webhook_sink.respond("/hook", respond)
    sub = subscription("slow", topic, webhook_sink, "/hook", timeout_ms=30000)
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=[sub])
    produce_values(kafka, topic, [b"first"])
    wait_for(lambda: sub_status(status_doc(daemon), "slow")["lag"] == 0, DELIVERY_TIMEOUT,
             "the first message to be committed", daemon, interval=0.2)

    blocking.set()
    try:
        produce_values(kafka, topic, [f"m{i}".encode() for i in range(BACKLOG)])
        wait_for(lambda: len(entered) == 2, DELIVERY_TIMEOUT, "m0 to reach the sink", daemon)
        wait_for(lambda: scrape(daemon).get("ackd_consumer_paused_partitions",
                                            subscription="slow") == 1,
                 30, "the partition to be paused", daemon)
        wait_for(lambda: scrape(daemon).get("ackd_consumer_lag", subscription="slow",
                                            topic=topic, partition=0) == BACKLOG,
                 30, f"a lag of {BACKLOG}", daemon)
        m = scrape(daemon)
        assert m.get("ackd_webhook_in_flight", subscription="slow") == 1
        assert m.get("ackd_consumer_assigned_partitions", subscription="slow") == 1
        s = sub_status(status_doc(daemon), "slow")
        assert s["lag"] == BACKLOG and s["in_flight"] == 1 and s["paused"] is False
        assert entered == [b"first", b"m0"], "one request in flight per partition"
        produce_values(kafka, topic, [f"late{i}".encode() for i in range(LATE)])
        wait_for(lambda: scrape(daemon).get("ackd_consumer_lag", subscription="slow",
                                            topic=topic, partition=0) == BACKLOG + LATE,
                 30, f"a lag of {BACKLOG + LATE}", daemon)
    finally:
        blocking.clear()
        release.set()
    wait_for(lambda: sub_status(status_doc(daemon), "slow")["lag"] == 0, DELIVERY_TIMEOUT,
             "the backlog to drain", daemon, interval=0.3)
    m = scrape(daemon)
    assert m.get("ackd_consumer_paused_partitions", subscription="slow") == 0
    assert m.get("ackd_webhook_delivered_total", subscription="slow") == BACKLOG + LATE + 1
    assert m.get("ackd_webhook_requests_total", subscription="slow",
                 status="2xx") == BACKLOG + LATE + 1


def test_lag_is_reported_for_a_new_group_whose_endpoint_answers_410(kafka, ackd,
                                                                   webhook_sink):
    """A subscription that never delivered anything still has a lag: the
    messages waiting since the start of the topic, on every assigned partition,
    also those that arrived after a 410 paused it."""
    topic = new_topic(kafka, partitions=2)
    produce_values(kafka, topic, [f"a{i}".encode() for i in range(7)], partition=0)
    webhook_sink.respond("/gone", lambda req: 410)
    sub = subscription("gone", topic, webhook_sink, "/gone")
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=[sub])
    wait_for(lambda: scrape(daemon).get("ackd_subscription_paused", subscription="gone") == 1,
             DELIVERY_TIMEOUT, "the 410 to pause the subscription", daemon)
    m = scrape(daemon)
    assert m.get("ackd_consumer_paused_partitions", subscription="gone") == 2
    assert m.get("ackd_webhook_requests_total", subscription="gone", status="4xx") >= 1
    assert m.get("ackd_webhook_delivered_total", subscription="gone") == 0
    # Messages that arrive while the subscription waits for a reload.
    produce_values(kafka, topic, [f"b{i}".encode() for i in range(5)], partition=1)

    def lag_known():
        mm = scrape(daemon)
        return (mm.has("ackd_consumer_lag", subscription="gone", topic=topic, partition=0)
                and mm.has("ackd_consumer_lag", subscription="gone", topic=topic, partition=1))

    wait_for(lag_known, 10, "lag rows for both partitions", daemon)
    m = scrape(daemon)
    assert m.get("ackd_consumer_lag", subscription="gone", topic=topic, partition=0) == 7
    assert m.get("ackd_consumer_lag", subscription="gone", topic=topic, partition=1) == 5
    s = sub_status(status_doc(daemon), "gone")
    assert s["paused"] is True and s["lag"] == 12
    # Nothing was delivered, so nothing past offset 0 is committed.
    assert all(o in (-1001, 0) for o in kafka.committed(sub["group"], topic).values())


# --- readiness, spool gauges and an unreachable Kafka (mock cluster) -----------

def mock_all_down(mock):
    for b in (1, 2, 3):
        mock.broker_down(b)


def mock_all_up(mock):
    for b in (1, 2, 3):
        mock.broker_up(b)


def test_readyz_unreachable_kafka_and_full_spool_then_restart_delivers(mock_kafka, ackd):
    """Kafka down from the start: /healthz stays 200, /readyz is 503 naming
    Kafka; ack=spool publishes fill the spool gauges; a full spool adds its
    reason and 507s. SIGTERM exits 0 leaving the records in the spool; with
    Kafka back, a restarted ackd is ready and delivers every one of them."""
    mock = mock_kafka
    mock.create_topic("orders", partitions=1, rf=3)
    mock_all_down(mock)
    daemon = ackd(brokers=mock.bootstrap,
                  config={"spool": {"max_bytes": SPOOL_MIN_BYTES},
                          "kafka": {"producer": ["message.timeout.ms=300000"]}})

    r = daemon.http.get("/healthz")
    assert (r.status, r.json()) == (200, {"status": "ok"})
    assert daemon.unix.get("/healthz").status == 200
    status, body = readyz(daemon)
    assert status == 503 and body["reasons"] == [KAFKA_REASON], body
    m = scrape(daemon)
    assert m.get("ackd_kafka_reachable") == 0
    assert m.get("ackd_kafka_brokers_up") == 0
    doc = status_doc(daemon)
    check_status_shape(doc)
    assert doc["kafka"]["reachable"] is False and doc["kafka"]["brokers_up"] == 0
    assert doc["kafka"]["producer"]["state"] == "disconnected"

    t0 = time.time()
    sent = []
    for i in range(5):
        body_i = f"spooled-{i}".encode() * 1000
        r = publish(daemon, "orders", body_i, ack="spool", key=f"k{i}")
        assert r.status == 202, r.body
        sent.append(body_i)
    time.sleep(1.2)
    m = scrape(daemon)
    age = time.time() - t0
    assert m.get("ackd_spool_records") == 5
    assert m.get("ackd_spool_bytes") > sum(len(b) for b in sent)
    assert 1.0 <= m.get("ackd_spool_oldest_age_seconds") <= age + 1
    assert m.get("ackd_produce_delivered_total") == 0
    doc = status_doc(daemon)
    assert doc["spool"]["records"] == 5
    assert doc["spool"]["bytes"] == m.get("ackd_spool_bytes")
    assert 1.0 <= doc["spool"]["oldest_age_seconds"] <= age + 1.5

    # Fill the spool to exactly spool.max_bytes: measure one record's
    # overhead, then send a body that takes what is left.
    b0 = scrape(daemon).get("ackd_spool_bytes")
    probe = b"p" * 1000
    assert publish(daemon, "orders", probe, ack="spool", key="k5").status == 202
    sent.append(probe)
    b1 = scrape(daemon).get("ackd_spool_bytes")
    overhead = int(b1 - b0) - len(probe)
    assert overhead > 0
    chunk = 60000
    while SPOOL_MIN_BYTES - scrape(daemon).get("ackd_spool_bytes") > chunk + overhead:
        body_i = bytes([65 + len(sent) % 26]) * chunk
        assert publish(daemon, "orders", body_i, ack="spool",
                       key=f"k{len(sent)}").status == 202
        sent.append(body_i)
    rest = int(SPOOL_MIN_BYTES - scrape(daemon).get("ackd_spool_bytes")) - overhead
    # The key's length is part of the overhead: keep it the same length as k5.
    last = b"L" * rest
    r = publish(daemon, "orders", last, ack="spool", key=f"k{len(sent) % 10}")
    assert r.status == 202, r.body
    sent.append(last)
    assert scrape(daemon).get("ackd_spool_bytes") == SPOOL_MIN_BYTES
    r = publish(daemon, "orders", b"one more", ack="spool")
    assert r.status == 507 and r.json()["error"]["code"] == "spool_full", r.body
    assert r.header("retry-after") is not None
    status, body = readyz(daemon)
    assert status == 503 and sorted(body["reasons"]) == sorted([KAFKA_REASON,
                                                                SPOOL_FULL_REASON]), body
    m = scrape(daemon)
    assert m.get("ackd_publish_requests_total", status="507") == 1
    assert m.get("ackd_publish_requests_total", status="202") == len(sent)
    assert m.get("ackd_spool_records") == len(sent)

    # SIGTERM: exit 0, the records stay in the spool.
    assert daemon.stop() == 0
    assert "stopped" in daemon.stderr_text().splitlines()[-1]
    segs = [f for f in os.listdir(daemon.spool_dir) if not f.startswith(".")]
    assert segs, "the spool directory is empty after a stop with unacknowledged records"

    mock_all_up(mock)
    daemon.start()
    wait_for(lambda: readyz(daemon)[0] == 200, 30, "/readyz 200 with Kafka back", daemon)
    wait_for(lambda: scrape(daemon).get("ackd_spool_records") == 0, 30,
             "the spool to drain", daemon)
    m = scrape(daemon)
    assert m.get("ackd_produce_delivered_total") == len(sent)
    assert m.get("ackd_kafka_reachable") == 1
    assert m.get("ackd_kafka_brokers_up") == 3  # the mock cluster's three brokers
    assert "metadata" in m.helps["ackd_kafka_brokers_up"], m.helps["ackd_kafka_brokers_up"]
    assert m.get("ackd_spool_oldest_age_seconds") == 0
    doc = status_doc(daemon)
    assert doc["kafka"]["reachable"] is True and doc["kafka"]["brokers_up"] == 3
    assert doc["kafka"]["producer"]["state"] == "ok"
    assert doc["spool"]["records"] == 0
    records = mock.read_topic("orders")
    assert sorted(r.value for r in records) == sorted(sent)
    assert len({r.header("ackd-id") for r in records}) == len(sent)
    # Room again in the spool: a publish is taken.
    assert publish(daemon, "orders", b"after", ack="spool").status == 202
    assert readyz(daemon)[0] == 200


def test_readyz_turns_200_when_kafka_comes_back_without_a_restart(mock_kafka, ackd):
    mock = mock_kafka
    mock.create_topic("events", partitions=2, rf=3)
    mock_all_down(mock)
    daemon = ackd(brokers=mock.bootstrap)
    assert readyz(daemon) == (503, {"status": "not_ready", "reasons": [KAFKA_REASON]})
    r = publish(daemon, "events", b"while down", ack="spool")
    assert r.status == 202, r.body
    assert scrape(daemon).get("ackd_spool_records") == 1

    mock_all_up(mock)
    wait_for(lambda: readyz(daemon)[0] == 200, 20, "/readyz 200", daemon)
    wait_for(lambda: scrape(daemon).get("ackd_produce_delivered_total") == 1, 30,
             "the spooled record to be delivered", daemon)
    m = scrape(daemon)
    assert m.get("ackd_kafka_reachable") == 1 and m.get("ackd_kafka_brokers_up") == 3
    assert m.get("ackd_spool_records") == 0
    assert [r.value for r in mock.read_topic("events")] == [b"while down"]


# --- reload (SIGHUP) --------------------------------------------------------------

def test_sighup_reloads_subscriptions(kafka, ackd, webhook_sink):
    """Unchanged keeps running untouched, removed stops, changed restarts with
    its new settings, added starts."""
    t = {n: new_topic(kafka) for n in ("keep", "gone", "change", "added")}
    subs = [subscription("keep", t["keep"], webhook_sink, "/keep"),
            subscription("gone", t["gone"], webhook_sink, "/gone"),
            subscription("change", t["change"], webhook_sink, "/change1")]
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=subs)
    for name in ("keep", "gone", "change"):
        wait_log(daemon, rf"subscription {name}: assigned 1 partitions")
    for name in ("keep", "gone", "change"):
        produce_values(kafka, t[name], [f"{name}-1".encode()])
    for path in ("/keep", "/gone", "/change1"):
        webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT, path=path)
    wait_for(lambda: all(s["lag"] == 0 for s in status_doc(daemon)["subscriptions"]),
             30, "every first message committed", daemon)

    new_subs = [subscription("keep", t["keep"], webhook_sink, "/keep"),
                subscription("change", t["change"], webhook_sink, "/change2"),
                subscription("added", t["added"], webhook_sink, "/added")]
    daemon.settings["subscriptions"] = new_subs
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, r"reload: done \(3 subscriptions, log level info\)")
    assert log_lines(daemon, r"reload: subscription gone removed: stopping it")
    assert log_lines(daemon, r"reload: subscription change changed or paused: restarting it")
    assert log_lines(daemon, r"reload: subscription change started")
    assert log_lines(daemon, r"reload: subscription added started")
    assert not log_lines(daemon, r"reload: subscription keep")
    assert not log_lines(daemon, r"reload: .* takes effect after a restart")
    wait_log(daemon, r"subscription added: assigned 1 partitions")
    wait_log(daemon, r"subscription change: assigned 1 partitions", count=2)

    for name in ("keep", "gone", "change", "added"):
        produce_values(kafka, t[name], [f"{name}-2".encode()])
    webhook_sink.wait_for(2, timeout=DELIVERY_TIMEOUT, path="/keep")
    webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT, path="/change2")
    webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT, path="/added")
    wait_for(lambda: all(s["lag"] == 0 for s in status_doc(daemon)["subscriptions"]),
             30, "every subscription committed", daemon)
    time.sleep(1.5)  # a removed subscription would have had time to deliver

    # keep: never rebalanced, every message once.
    assert len(log_lines(daemon, r"subscription keep: assigned")) == 1
    assert not log_lines(daemon, r"subscription keep: partitions revoked")
    assert [r.body for r in webhook_sink.received("/keep")] == [b"keep-1", b"keep-2"]
    # gone: nothing after its removal.
    assert [r.body for r in webhook_sink.received("/gone")] == [b"gone-1"]
    assert kafka.committed(subs[1]["group"], t["gone"]) == {0: 1}
    # change: the new url, resuming after what it committed.
    assert [r.body for r in webhook_sink.received("/change1")] == [b"change-1"]
    assert [r.body for r in webhook_sink.received("/change2")] == [b"change-2"]
    assert [r.body for r in webhook_sink.received("/added")] == [b"added-2"]

    doc = status_doc(daemon)
    assert [s["name"] for s in doc["subscriptions"]] == ["keep", "change", "added"]
    m = scrape(daemon)
    names = {dict(labels)["subscription"]
             for labels in m.series("ackd_consumer_assigned_partitions")}
    assert names == {"keep", "change", "added"}
    # keep's counters went on across the reload; change's are its new run's.
    assert m.get("ackd_webhook_delivered_total", subscription="keep") == 2
    assert m.get("ackd_webhook_delivered_total", subscription="change") == 1
    assert m.get("ackd_webhook_delivered_total", subscription="added") == 1


def test_sighup_log_level_restart_keys_and_a_broken_file(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription("keep", topic, webhook_sink, "/keep")
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=[sub])
    wait_log(daemon, r"subscription keep: assigned 1 partitions")
    assert not log_lines(daemon, r"^ackd: debug: ")

    # log.level = "debug": debug lines appear.
    daemon.settings["log"] = {"level": "debug"}
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, r"reload: done \(1 subscriptions, log level debug\)")
    webhook_sink.script("/keep", 500)  # its retry is logged at debug level
    produce_values(kafka, topic, [b"one"])
    webhook_sink.wait_for(2, timeout=DELIVERY_TIMEOUT, path="/keep")
    wait_log(daemon, r"^ackd: debug: subscription keep: .* attempt 1: status 500", timeout=15)
    assert not log_lines(daemon, r"reload: .* takes effect after a restart")

    # A key that needs a restart is named; the running one stays.
    running_spool = str(daemon.spool_dir)
    daemon.settings["spool"] = {**daemon.settings["spool"], "dir": running_spool + "-next"}
    daemon.settings["limits"] = {"max_body_bytes": 1000}
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, r"reload: done \(1 subscriptions", count=2)
    assert log_lines(daemon, r"reload: spool\.dir changed; it takes effect after a restart")
    assert log_lines(daemon,
                     r"reload: limits\.max_body_bytes changed; it takes effect after a restart")
    assert publish(daemon, topic, b"x" * 2000).status == 200  # the old limit still holds
    assert not os.path.exists(running_spool + "-next")

    # log.level back to info: no more debug lines.
    daemon.settings["log"] = {"level": "info"}
    daemon.write_config()
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, r"reload: done \(1 subscriptions, log level info\)")
    n_debug = len(log_lines(daemon, r"^ackd: debug: "))

    # A file with errors: reported as file:line, the running configuration stays.
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "subscriptions = 12;\nlog = { level = \"loud\"; };\n")
    daemon.signal(signal.SIGHUP)
    wait_log(daemon, r"has errors; keeping the running configuration")
    errors = log_lines(daemon, rf"reload: {re.escape(str(daemon.config_path))}:\d+: ")
    assert errors, daemon.stderr_text()
    assert len(log_lines(daemon, r"reload: done")) == 3
    produce_values(kafka, topic, [b"two"])
    webhook_sink.wait_for(4, timeout=DELIVERY_TIMEOUT, path="/keep")
    assert [r.body for r in webhook_sink.received("/keep")][-1] == b"two"
    assert len(log_lines(daemon, r"^ackd: debug: ")) == n_debug
    assert daemon.http.get("/healthz").status == 200
    assert len(log_lines(daemon, r"subscription keep: assigned")) == 1


# --- SIGTERM, step by step --------------------------------------------------------

def test_sigterm_stops_in_order(kafka, ackd, webhook_sink):
    """/readyz 503 on a connection opened before, new connections refused, the
    in-flight webhook finishes and is committed, the producer is flushed, exit 0."""
    src = new_topic(kafka)
    out = new_topic(kafka, partitions=2)
    entered = []

    def slow(req):
        entered.append(time.monotonic())
        return Reply(200, delay=2.0)

    webhook_sink.respond("/slow", slow)
    sub = subscription("slow", src, webhook_sink, "/slow", timeout_ms=8000)
    daemon = ackd(config={"kafka": {"consumer": CONSUMER_SETTINGS}}, subscriptions=[sub])
    wait_log(daemon, r"subscription slow: assigned 1 partitions")

    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=5)
    conn.request("GET", "/readyz")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read()) == {"status": "ready"}

    produce_values(kafka, src, [b"slow one"])
    wait_for(lambda: entered, DELIVERY_TIMEOUT, "the webhook request", daemon)
    # Published just before SIGTERM: ack=spool answers before Kafka acks.
    published = [f"last-{i}".encode() for i in range(20)]
    for v in published:
        assert publish(daemon, out, v, ack="spool").status == 202

    daemon.signal(signal.SIGTERM)
    t0 = time.monotonic()
    while True:
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        if resp.status != 200 or time.monotonic() - t0 > 1:
            break
        time.sleep(0.02)
    assert resp.status == 503, body
    assert "ackd is shutting down" in body["reasons"], body
    assert resp.getheader("retry-after") is not None
    conn.close()
    # The listeners are closed: a new connection is refused at once.
    try:
        socket.create_connection(("127.0.0.1", daemon.http_port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused, "a new TCP connection was accepted after SIGTERM"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(daemon.unix_path))
        refused = False
    except (ConnectionRefusedError, FileNotFoundError):
        refused = True
    finally:
        s.close()
    assert refused, "a new Unix socket connection was accepted after SIGTERM"
    assert all(r.answered is None for r in webhook_sink.received("/slow")), \
        "the checks above took longer than the webhook"

    assert daemon.wait_exit(timeout=15) == 0
    # The in-flight webhook was let finish, before the exit.
    got = webhook_sink.received("/slow")
    assert len(got) == 1 and len(entered) == 1
    assert got[0].answered - entered[0] >= 1.9 and got[0].status == 200
    assert kafka.committed(sub["group"], src) == {0: 1}
    # The producer was flushed: every record is in Kafka.
    assert sorted(r.value for r in kafka.read_topic(out)) == sorted(published)
    text = daemon.stderr_text()
    assert "received SIGTERM, stopping" in text
    assert text.splitlines()[-1].endswith("stopped")
    # The spool holds nothing more: a restart produces nothing again.
    daemon.start()
    m = scrape(daemon)
    assert m.get("ackd_spool_records") == 0
    assert m.get("ackd_produce_delivered_total") == 0
    time.sleep(0.5)
    assert len(kafka.read_topic(out)) == len(published)


# --- a service manager's view: STATUS= and the watchdog ------------------------

def test_status_lines_and_watchdog_under_notify_socket(mock_kafka, request):
    mock = mock_kafka
    mock.create_topic("orders", partitions=1, rf=3)
    mock_all_down(mock)
    short = tempfile.mkdtemp(prefix="ackd-op")
    manager = NotifySocket(os.path.join(short, "notify"))
    daemon = Ackd(find_ackd(), mock.bootstrap, name="ackd#1",
                  env={"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "2000000",
                       "WATCHDOG_PID": None, "LISTEN_PID": None, "LISTEN_FDS": None,
                       "LISTEN_FDNAMES": None})
    request.node.ackd_instances = [daemon]
    try:
        daemon.start(wait=False)
        manager.wait_for("READY=1", 20, daemon)

        def status_lines():
            return [line for _, _, lines in manager.messages for line in lines
                    if line.startswith("STATUS=running; spool:")]

        # Each tick (1 s) says the spool's depth.
        manager.wait_for("WATCHDOG=1", 2)
        first = status_lines()
        assert first and all(re.fullmatch(r"STATUS=running; spool: \d+ records, \d+ bytes", s)
                             for s in first), first
        assert re.fullmatch(r"STATUS=running; spool: 0 records, \d+ bytes", first[-1])
        for i in range(3):
            assert publish(daemon, "orders", f"s{i}".encode(), ack="spool").status == 202
        spool_bytes = int(scrape(daemon).get("ackd_spool_bytes"))
        want = f"STATUS=running; spool: 3 records, {spool_bytes} bytes"
        manager.wait_for(want, 3, daemon)
        r = daemon.http.get("/healthz")
        assert (r.status, r.json()) == (200, {"status": "ok"})
        # The pings go on while every loop turns, about once a second.
        t_a, _, _ = manager.wait_for("WATCHDOG=1", 2)
        t_b, _, _ = manager.wait_for("WATCHDOG=1", 2)
        assert 0.5 <= t_b - t_a <= 1.5
        assert not log_lines(daemon, r"watchdog: not pinging")

        mock_all_up(mock)
        want = re.compile(r"STATUS=running; spool: 0 records, \d+ bytes")
        deadline = time.monotonic() + 30
        while not any(want.fullmatch(s) for s in status_lines()[len(first) + 1:]):
            assert time.monotonic() < deadline, status_lines()[-5:]
            manager.receive(0.5)
        daemon.signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1", 10)
        assert daemon.wait_exit() == 0
    finally:
        daemon.close()
        manager.close()
        shutil.rmtree(short, ignore_errors=True)


# --- secrets never reach the log --------------------------------------------

def assert_no_secret(text, secrets):
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in the log: {leaked}\n{text[-3000:]}"


def test_a_refused_property_or_url_is_named_without_its_secret(tmp_path):
    secrets = ["hunter2-prop", "hunter2-key", "pw-userinfo", "tok-query", "hunter2-mech"]
    conf = tmp_path / "ackd.conf"
    conf.write_text(
        'kafka = { brokers = "127.0.0.1:9092";\n'
        '  producer = [ "sasl.passwrd=hunter2-prop", "ssl.key.pasword=hunter2-key" ];\n'
        '  consumer = [ "enable.auto.offset.store=true" ]; };\n'
        'subscriptions = ( { name = "s"; topics = [ "t" ];\n'
        '  url = "ftp://user:pw-userinfo@example.com/hook?token=tok-query"; } );\n')
    for args in (("-n", "-c", conf), ("-c", conf)):  # checking, and starting
        res = ackd_proc.run(*args)
        out = res.stdout + res.stderr
        assert res.returncode == 1, out
        assert f'{conf}:2: kafka.producer: "sasl.passwrd=(hidden)": No such configuration ' \
               f'property: "sasl.passwrd"' in out, out
        assert '"ssl.key.pasword=(hidden)"' in out, out
        assert (f'{conf}:3: kafka.consumer: "enable.auto.offset.store=true" would commit '
                f'offsets before delivery') in out, out
        assert f'{conf}:5: subscriptions[0].url: "ftp://example.com/hook?(query hidden)"' \
            in out, out
        assert_no_secret(out, secrets)

    # What librdkafka refuses only when a client is made, in its own words.
    conf.write_text(
        'kafka = { brokers = "127.0.0.1:9092";\n'
        '  producer = [ "security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=hunter2-mech" ]; };\n')
    res = ackd_proc.run("-n", "-c", conf)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Unsupported SASL mechanism: (hidden)" in out, out
    assert_no_secret(out, secrets)


def test_the_debug_log_holds_no_secret_and_no_raw_header_line(kafka, ackd, webhook_sink):
    topic = new_topic(kafka, prefix="secret")
    whsec = "whsec_" + base64.b64encode(b"whsec-secret-bytes-0123456789").decode()
    token = "tok-auth-secret-0123456789"
    secrets = ["hunter2-prod", "hunter2-cons", "user-prod", "pw-userinfo", "tok-query",
               whsec, whsec[6:], token, "hdr-value-secret"]
    url = f"http://user:pw-userinfo@127.0.0.1:{webhook_sink.port}/hook?token=tok-query"
    sub = subscription("sec", topic, webhook_sink, "/hook", url=url, secrets=[whsec])
    daemon = ackd(config={"kafka": {"producer": ["sasl.username=user-prod",
                                                 "sasl.password=hunter2-prod"],
                                    "consumer": ["sasl.password=hunter2-cons"]},
                          "auth": {"tokens": [{"token": token}]}},
                  subscriptions=[sub], args=["-d"])
    # A Kafka header whose name would start a log line of its own if written raw.
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    p.produce(topic, value=b"v", headers=[("x\r\ninjected: yes", b"hdr-value-secret"),
                                          ("ok", b"hdr-value-secret")])
    assert p.flush(30) == 0
    wait_for(lambda: len(webhook_sink.received("/hook")) >= 1, 30, "the delivery", daemon)
    got = webhook_sink.received("/hook")[0]
    assert got.header("webhook-signature"), "sent unsigned"
    r = daemon.http.post(f"/v1/topics/{topic}", body=b"published",
                         headers={"Authorization": f"Bearer {token}"})
    assert r.status in (200, 202), r.body
    r = daemon.http.post(f"/v1/topics/{topic}", body=b"refused",
                         headers={"Authorization": f"Bearer {token}x"})
    assert r.status == 401, r.body
    wait_for(lambda: len(webhook_sink.received("/hook")) >= 2, 30, "the second delivery",
             daemon)
    daemon.stop()
    text = daemon.stderr_text()
    assert "ackd: debug:" in text, "not at debug level"
    assert_no_secret(text, secrets)
    assert f"http://127.0.0.1:{webhook_sink.port}/hook?(query hidden)" in text, text[-3000:]
    assert 'kafka header "x\\x0d\\x0ainjected: yes" is not an http field name' in text, \
        text[-3000:]
    assert not [line for line in text.splitlines() if line.startswith("injected")]


# --- publish.slice_us -------------------------------------------------------------
# More cases (bounds, nice values, policies, started threads) are in
# tests/unit/test_util.c.

SLICED = ("ackd-writer", "ackd-kafka")  # and some MHD-worker and rdk:broker threads


def slice_kernel():
    """Linux 6.12 and later take a thread's slice from sched_setattr()."""
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return (major, minor) >= (6, 12)


class SchedAttr(ctypes.Structure):
    """sched_getattr(2)'s first form (48 bytes)."""
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32),
                ("flags", ctypes.c_uint64), ("nice", ctypes.c_int32),
                ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


SYS_SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}[os.uname().machine]


def thread_slices(pid):
    """[(thread name, slice in ns)] of every thread of pid, as sched_getattr()
    reports it (0 before Linux 6.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        attr = SchedAttr(size=ctypes.sizeof(SchedAttr))
        try:
            name = (task / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended
            continue
        if libc.syscall(SYS_SCHED_GETATTR, int(task.name), ctypes.byref(attr),
                        ctypes.sizeof(attr), 0) != 0:
            assert ctypes.get_errno() == errno.ESRCH, os.strerror(ctypes.get_errno())
            continue
        out.append((name, attr.runtime))
    return out


def serve_on_every_listener(daemon, topic):
    """Requests on 8 connections held open at once on each listener. Each
    listener has servers of its own, so at least one libmicrohttpd thread per
    listener serves; the connections' descriptors spread them over more."""
    for client in daemon.listeners():
        conns = [client.connection() for _ in range(8)]
        for conn in conns:
            conn.connect()
        for conn in conns:
            conn.request("POST", f"/v1/topics/{topic}?ack=kafka", body=b"sliced")
            r = conn.getresponse()
            assert r.status == 200, (r.status, r.read())
            r.read()
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("slice_us,held_us", [(100, 100), (2000, 2000), (50, 100)])
def test_the_answer_threads_ask_for_the_configured_scheduler_slice(kafka, ackd, slice_us,
                                                                   held_us):
    """publish.slice_us: the spool writer, the Kafka loop, the producer's
    librdkafka broker threads that connected and each libmicrohttpd thread
    that served a request hold that slice (the kernel raises 50 us to 100);
    every other thread (librdkafka's main threads, the spare's, the
    acceptors', main) holds the kernel's default, as main does."""
    topic = new_topic(kafka, prefix="slice")
    daemon = ackd(config={"publish": {"slice_us": slice_us}}, args=["-d"])
    serve_on_every_listener(daemon, topic)
    slices = thread_slices(daemon.proc.pid)
    log = daemon.stderr_text()
    if not slice_kernel():
        assert {s for _, s in slices} == {0}, slices
        assert "ackd-writer: scheduler slice: the kernel keeps its own" in log, log[-3000:]
        return
    default = dict(slices)["ackd"]
    assert default != held_us * 1000
    served = [s for name, s in slices if name == "MHD-worker" and s != default]
    assert len(served) >= 2, slices  # a thread per listener at least
    assert set(served) == {held_us * 1000}, slices
    assert log.count(f"http: scheduler slice {held_us} us") == len(served), log[-3000:]
    for name in SLICED:
        assert dict(slices)[name] == held_us * 1000, (name, slices)
        assert f"{name}: scheduler slice {held_us} us" in log, log[-3000:]
    # The producer's librdkafka broker threads that connected hold it too:
    # at most one per bootstrap address and one per broker, each logged.
    # (All handles' broker threads are named rdk:broker*, so which handle a
    # thread serves is not seen here.)
    brokers = [s for n, s in slices if n.startswith("rdk:broker")]
    held = [s for s in brokers if s != default]
    assert held and set(held) == {held_us * 1000}, slices
    assert len(held) <= len(kafka.bootstrap.split(",")) + len(kafka.nodes), slices
    assert log.count(f"kafka broker thread: scheduler slice {held_us} us") >= len(held), \
        log[-3000:]
    others = [(n, s) for n, s in slices
              if n not in SLICED and n != "MHD-worker" and not n.startswith("rdk:broker")]
    assert {"ackd-spare", "http-accept", "rdk:main"} <= {n for n, _ in others}, slices
    assert all(s == default for _, s in others), slices


def test_slice_us_0_leaves_every_thread_at_the_default(kafka, ackd):
    topic = new_topic(kafka, prefix="slice")
    daemon = ackd(config={"publish": {"slice_us": 0}}, args=["-d"])
    serve_on_every_listener(daemon, topic)
    slices = thread_slices(daemon.proc.pid)
    assert len({s for _, s in slices}) == 1, slices
    assert "scheduler slice" not in daemon.stderr_text()
