"""Idempotency-Key on the publish API (docs/http-api.md, "Idempotency-Key").

    replay        the same request with the same key: the first answer's ids,
                  Idempotent-Replayed: true, the current status; one message
    scope         another topic, or the other listener: another key
    reused        another request with the key: 422 idempotency_key_reused
    bad key       empty, 256 characters, non-ASCII: 400, nothing written
    in use        while the first request is being written: 409 with
                  Retry-After (fdatasync slowed down under strace)
    failed first  a first request that got a non-2xx did not use up its key
    rejected      a record Kafka rejected is never replayed as a 2xx, also
                  after a restart (failed/ is read back)
    batch         one key for a whole batch
    restart       keys survive SIGTERM and kill -9 restarts
    ttl           an expired key is free again
    kill -9       30 rounds: ackd killed with SIGKILL at a varied point of a
                  request; the client retries with the same key until it
                  gets an answer; every key ends as one message in Kafka

Every test reads the topic back and counts the copies per key.
"""

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from ackd_proc import Ackd, find_spool_tool
from httpclient import HttpClient
from kafka import KafkaCluster, wait_until

ARRIVAL_TIMEOUT = 30


def new_topic(kafka, partitions=1, configs=None):
    name = f"idem-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=partitions, configs=configs)
    return name


def post(client, topic, body, ikey=None, headers=None, batch=False, **query):
    path = f"/v1/topics/{topic}" + ("/records" if batch else "")
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    hdrs = dict(headers or {})
    if ikey is not None:
        hdrs["Idempotency-Key"] = ikey
    if batch:
        hdrs["Content-Type"] = "application/json"
        body = json.dumps({"records": body}).encode()
    return client.post(path, body=body, headers=hdrs)


def assert_error(r, status, code):
    assert r.status == status, (r.status, r.body)
    assert r.json()["error"]["code"] == code, r.body
    assert r.header("Idempotent-Replayed") is None


def records_by_value(kafka, topic, expect, timeout=ARRIVAL_TIMEOUT):
    """Read the topic until it holds at least `expect` records; value -> [records]."""
    got = {}

    def enough():
        got.clear()
        recs = kafka.read_topic(topic, timeout=5)
        for rec in recs:
            got.setdefault(rec.value, []).append(rec)
        return len(recs) >= expect

    wait_until(enough, timeout, f"{expect} records in {topic}")
    return got


def settle(kafka, topic, expect):
    """The topic's records once nothing more arrives for a second after `expect`."""
    got = records_by_value(kafka, topic, expect)
    time.sleep(1.0)
    return records_by_value(kafka, topic, expect)


# --- replays, scope, errors ----------------------------------------------------

@pytest.mark.parametrize("ack", ["kafka", "spool"])
def test_replay_answers_as_the_first(kafka, ackd, ack):
    daemon = ackd()
    topic = new_topic(kafka)
    first = post(daemon.http, topic, b"hello", ikey="order-1", ack=ack)
    assert first.status in (200, 202), first.body
    assert first.header("Idempotent-Replayed") is None
    body = first.json()
    if ack == "spool":
        assert first.status == 202 and body["status"] == "spooled"
        # The current status: once Kafka acknowledged it, a replay says 200 with the offset.
        wait_until(lambda: post(daemon.http, topic, b"hello", ikey="order-1",
                                ack=ack).status == 200, ARRIVAL_TIMEOUT, "a 200 replay")
    again = post(daemon.http, topic, b"hello", ikey="order-1", ack=ack)
    assert again.status == 200, again.body
    assert again.header("Idempotent-Replayed") == "true"
    rb = again.json()
    assert rb["id"] == body["id"]
    assert rb["status"] == "delivered" and rb["topic"] == topic
    got = settle(kafka, topic, 1)
    assert len(got[b"hello"]) == 1, got
    rec = got[b"hello"][0]
    assert (rb["partition"], rb["offset"]) == (rec.partition, rec.offset)
    assert rec.header("ackd-id").decode() == body["id"]


def test_scope_topic_and_listener(kafka, ackd):
    daemon = ackd()
    t1, t2 = new_topic(kafka), new_topic(kafka)
    a = post(daemon.http, t1, b"x", ikey="k")
    b = post(daemon.http, t2, b"x", ikey="k")    # another topic: another key
    c = post(daemon.unix, t1, b"x", ikey="k")    # the other listener: another key
    d = post(daemon.unix, t1, b"x", ikey="k")    # a repeat on the Unix socket
    assert [r.status for r in (a, b, c, d)] == [200, 200, 200, 200]
    assert len({a.json()["id"], b.json()["id"], c.json()["id"]}) == 3
    assert d.json()["id"] == c.json()["id"] and d.header("Idempotent-Replayed") == "true"
    assert len(settle(kafka, t1, 2)[b"x"]) == 2
    assert len(settle(kafka, t2, 1)[b"x"]) == 1


def test_scope_token(kafka, ackd):
    daemon = ackd(config={"auth": {"tokens": [{"token": "secret-one-0123456789"},
                                              {"token": "secret-two-0123456789"}]}})
    topic = new_topic(kafka)
    h1 = {"Authorization": "Bearer secret-one-0123456789"}
    h2 = {"Authorization": "Bearer secret-two-0123456789"}
    a = post(daemon.http, topic, b"x", ikey="k", headers=h1)
    b = post(daemon.unix, topic, b"x", ikey="k", headers=h1)  # same token, other listener
    c = post(daemon.http, topic, b"x", ikey="k", headers=h2)  # another token
    assert [a.status, b.status, c.status] == [200, 200, 200]
    assert b.json()["id"] == a.json()["id"] and b.header("Idempotent-Replayed") == "true"
    assert c.json()["id"] != a.json()["id"]
    assert len(settle(kafka, topic, 2)[b"x"]) == 2
    # The secret is not in the spool: the scope is a hash of it.
    for f in daemon.spool_dir.glob("seg-*.spool"):
        assert b"secret-one" not in f.read_bytes()


def test_reused_key_is_422(kafka, ackd):
    daemon = ackd()
    topic = new_topic(kafka)
    assert post(daemon.http, topic, b"one", ikey="k").status == 200
    assert_error(post(daemon.http, topic, b"two", ikey="k"), 422, "idempotency_key_reused")
    assert_error(post(daemon.http, topic, b"one", ikey="k", partition=0), 422,
                 "idempotency_key_reused")
    assert_error(post(daemon.http, topic, b"one", ikey="k", headers={"Kafka-Header-h": "v"}),
                 422, "idempotency_key_reused")
    assert_error(post(daemon.http, topic, b"one", ikey="k", key="kk"), 422,
                 "idempotency_key_reused")
    got = settle(kafka, topic, 1)
    assert list(got) == [b"one"] and len(got[b"one"]) == 1


@pytest.mark.parametrize("bad", ["", "k" * 256, "caf\u00e9"])
def test_bad_key_is_400(kafka, ackd, bad):
    daemon = ackd()
    topic = new_topic(kafka)
    r = daemon.http.request("POST", f"/v1/topics/{topic}", body=b"x",
                            headers={"Idempotency-Key": bad.encode("latin-1")})
    assert_error(r, 400, "bad_request")
    assert "Idempotency-Key" in r.json()["error"]["message"]
    assert post(daemon.http, topic, b"y", ikey="k" * 255).status == 200
    got = settle(kafka, topic, 1)
    assert list(got) == [b"y"]


def test_in_use_is_409(kafka, ackd_bin, tmp_path):
    """Every fdatasync takes 1.5 s, so the first request is being written
    while the second arrives."""
    daemon = Ackd(ackd_bin, kafka.bootstrap, name="ackd-slow-sync",
                  wrapper=["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync",
                           "-e", "inject=fdatasync:delay_exit=1500000"])
    try:
        daemon.start(timeout=60)
        topic = new_topic(kafka)
        post(daemon.http, topic, b"warm-up", ack="spool")  # the topic is known from here
        first = {}
        t = threading.Thread(target=lambda: first.update(
            r=post(daemon.http, topic, b"x", ikey="k", ack="spool")))
        t.start()
        time.sleep(0.5)
        r = post(daemon.http, topic, b"x", ikey="k", ack="spool")
        assert_error(r, 409, "idempotency_key_in_use")
        assert r.header("Retry-After") == "1"
        t.join(30)
        assert first["r"].status == 202, first["r"].body
        again = post(daemon.http, topic, b"x", ikey="k", ack="spool")
        assert again.status in (200, 202) and again.header("Idempotent-Replayed") == "true"
        assert again.json()["id"] == first["r"].json()["id"]
        assert len(settle(kafka, topic, 2)[b"x"]) == 1
    finally:
        # SIGTERM to ackd itself (strace does not pass it on), and time for
        # the slowed fdatasyncs of its shutdown.
        if daemon.running():
            pid = daemon.proc.pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            daemon.proc.wait(timeout=60)
        daemon.close()


def test_failed_first_request_does_not_use_up_key(kafka, ackd):
    daemon = ackd()
    topic = f"idem-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic, partitions=1, configs={"max.message.bytes": "2000"})
    big = b"b" * 5000
    r = post(daemon.http, topic, big, ikey="k")
    assert r.status >= 400, r.body          # Kafka rejected it: a non-2xx
    ok = post(daemon.http, topic, b"small", ikey="k")
    assert ok.status == 200, ok.body        # the key is free: not 422
    assert ok.header("Idempotent-Replayed") is None
    got = settle(kafka, topic, 1)
    assert list(got) == [b"small"]


def test_rejected_record_is_never_replayed_as_2xx(kafka, ackd):
    """Kafka rejects a record for good (too large: it goes to failed/). A
    replay of its key answers what the first request would get now -- a
    batch's 207 with the entry "failed" -- never a 2xx "spooled"; a key all
    of whose records were rejected is forgotten (a retry is a new request),
    and both hold after a restart, which reads failed/ back."""
    daemon = ackd()
    topic = f"idem-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic, partitions=1, configs={"max.message.bytes": "2000"})
    big = "b" * 5000
    recs = [{"value": "a"}, {"value": big}]
    first = post(daemon.http, topic, recs, ikey="kb", batch=True)
    assert first.status == 207, first.body
    assert [e["status"] for e in first.json()["results"]] == ["delivered", "failed"]
    ids = [e["id"] for e in first.json()["results"]]
    # A single message with ack=spool: 202, then Kafka rejects it.
    spooled = post(daemon.http, topic, big.encode(), ikey="ks", ack="spool")
    assert spooled.status == 202, spooled.body
    # A single message with ack=kafka: Kafka's 4xx.
    single = post(daemon.http, topic, big.encode(), ikey="k1")
    assert single.status >= 400, single.body

    def rejected():
        r = daemon.http.get("/v1/status")
        assert r.status == 200, r.body
        return r.json()["kafka"]["producer"]["failed"]

    wait_until(lambda: rejected() >= 3, ARRIVAL_TIMEOUT, "three records rejected")

    def check(when):
        base = rejected()
        again = post(daemon.http, topic, recs, ikey="kb", batch=True)
        assert again.status == 207, (when, again.status, again.body)
        assert again.header("Idempotent-Replayed") == "true", when
        res = again.json()["results"]
        assert [e["id"] for e in res] == ids, when
        # (Offsets are not kept across restarts: "a" is "spooled" after one.)
        assert res[0]["status"] in ("delivered", "spooled"), (when, res)
        assert res[1]["status"] == "failed", (when, res)
        # Every record of these keys was rejected: the keys are free again,
        # and the retry is a new request that Kafka rejects in turn.
        s = post(daemon.http, topic, big.encode(), ikey="ks", ack="spool")
        assert s.status == 202 and s.header("Idempotent-Replayed") is None, \
            (when, s.status, s.body)
        assert s.json()["id"] != spooled.json()["id"], when
        k = post(daemon.http, topic, big.encode(), ikey="k1")
        assert k.status >= 400, (when, k.status, k.body)
        assert k.header("Idempotent-Replayed") is None, when
        # Both retries rejected before the next round: their keys are free again.
        wait_until(lambda: rejected() >= base + 2, ARRIVAL_TIMEOUT, "the retries rejected")

    check("running")
    daemon.restart()
    check("after a restart")
    daemon.kill9()
    daemon.start()
    check("after kill -9")
    got = settle(kafka, topic, 1)
    assert {v: len(rs) for v, rs in got.items()} == {b"a": 1}


def test_batch_takes_one_key(kafka, ackd):
    daemon = ackd()
    topic = new_topic(kafka, partitions=2)
    recs = [{"value": "a", "partition": 0}, {"value": "b", "partition": 1}, {"value": "c"}]
    first = post(daemon.http, topic, recs, ikey="batch-1", batch=True)
    assert first.status == 200, first.body
    again = post(daemon.http, topic, recs, ikey="batch-1", batch=True)
    assert again.status == 200 and again.header("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert_error(post(daemon.http, topic, recs[:2], ikey="batch-1", batch=True), 422,
                 "idempotency_key_reused")
    got = settle(kafka, topic, 3)
    assert {v: len(rs) for v, rs in got.items()} == {b"a": 1, b"b": 1, b"c": 1}


def test_replay_while_the_first_waits_for_kafka(ackd):
    """The broker is down: the first request (ack=kafka) waits, its repeat
    waits too; once the broker is back both get Kafka's answer, the same."""
    with KafkaCluster(brokers=1) as cluster:
        daemon = ackd(brokers=cluster.bootstrap, config={"publish": {"ack_timeout_ms": 40000}})
        topic = f"idem-{uuid.uuid4().hex[:12]}"
        cluster.create_topic(topic, partitions=1)
        assert post(daemon.http, topic, b"warm-up").status == 200
        cluster.stop_broker(1)
        out = {}

        slow = HttpClient(port=daemon.http_port, timeout=90)

        def send(name):
            out[name] = post(slow, topic, b"x", ikey="k")

        first = threading.Thread(target=send, args=("first",))
        first.start()
        time.sleep(1.0)
        repeat = threading.Thread(target=send, args=("repeat",))
        repeat.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        cluster.start_broker(1)
        first.join(60)
        repeat.join(60)
        waited = time.monotonic() - t0
        a, b = out["first"], out["repeat"]
        assert a.status == 200, a.body
        assert b.status == 200, (b.status, b.body, f"{waited:.1f} s after the broker came back")
        assert b.header("Idempotent-Replayed") == "true"
        assert b.json() == a.json()
        got = records_by_value(cluster, topic, 2)
        time.sleep(1.0)
        got = records_by_value(cluster, topic, 2)
        assert len(got[b"x"]) == 1


# --- restarts, TTL ---------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_keeps_keys(kafka, ackd, how):
    daemon = ackd()
    topic = new_topic(kafka)
    first = post(daemon.http, topic, b"x", ikey="k", ack="spool")
    batch = post(daemon.http, topic, [{"value": "p"}, {"value": "q"}], ikey="kb", batch=True)
    assert first.status in (200, 202) and batch.status == 200
    records_by_value(kafka, topic, 3)
    if how == "sigterm":
        daemon.restart()
    else:
        daemon.kill9()
        daemon.start()
    again = post(daemon.http, topic, b"x", ikey="k", ack="spool")
    assert again.status in (200, 202), again.body
    assert again.header("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    ids = [e["id"] for e in batch.json()["results"]]
    b2 = post(daemon.http, topic, [{"value": "p"}, {"value": "q"}], ikey="kb", batch=True)
    assert [e["id"] for e in b2.json()["results"]] == ids
    assert_error(post(daemon.http, topic, b"other", ikey="k"), 422, "idempotency_key_reused")
    got = settle(kafka, topic, 3)
    assert {v: len(rs) for v, rs in got.items()} == {b"x": 1, b"p": 1, b"q": 1}


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_keeps_offsets(kafka, ackd, how):
    """A keyed record Kafka acknowledged keeps its partition and offset across
    a restart (a KEY_ACK record of the keys file): a replay answers 200 with
    them, for a single message and a batch, also after a second restart."""
    daemon = ackd()
    topic = new_topic(kafka, partitions=2)
    single = post(daemon.http, topic, b"x", ikey="k", ack="kafka")
    batch = post(daemon.http, topic, [{"value": "p"}, {"value": "q"}], ikey="kb", batch=True,
                 ack="kafka")
    assert single.status == 200 and batch.status == 200, (single.body, batch.body)
    want_single = (single.json()["partition"], single.json()["offset"])
    want_batch = [(e["partition"], e["offset"]) for e in batch.json()["results"]]
    for _ in range(2):
        if how == "sigterm":
            daemon.restart()
        else:
            daemon.kill9()
            daemon.start()
        r = post(daemon.http, topic, b"x", ikey="k", ack="spool")
        assert r.status == 200, r.body
        assert r.header("Idempotent-Replayed") == "true"
        assert r.json()["status"] == "delivered"
        assert (r.json()["partition"], r.json()["offset"]) == want_single
        r = post(daemon.http, topic, [{"value": "p"}, {"value": "q"}], ikey="kb", batch=True)
        assert r.status == 200, r.body
        assert [(e["partition"], e["offset"]) for e in r.json()["results"]] == want_batch
    got = settle(kafka, topic, 3)
    assert {v: len(rs) for v, rs in got.items()} == {b"x": 1, b"p": 1, b"q": 1}
    assert (got[b"x"][0].partition, got[b"x"][0].offset) == want_single


def test_spool_tool_dumps_keys(kafka, ackd):
    """ackd-spool dump --keys lists the KEY records; verify finds no damage."""
    daemon = ackd(config={"kafka": {"brokers": "127.0.0.1:1"}})  # nothing leaves the spool
    topic = f"idem-{uuid.uuid4().hex[:12]}"
    one = post(daemon.http, topic, b"x", ikey="k-one", ack="spool")
    two = post(daemon.http, topic, [{"value": "a"}, {"value": "b"}], ikey="k-two", batch=True,
               ack="spool")
    assert one.status == 202 and two.status == 202, (one.body, two.body)
    daemon.stop()

    def tool(*args):
        return subprocess.run([str(find_spool_tool()), *map(str, args)], capture_output=True,
                              text=True, timeout=30)

    keys = tool("dump", daemon.spool_dir, "--keys")
    assert keys.returncode == 0, keys.stderr
    lines = [json.loads(x) for x in keys.stdout.splitlines()]
    assert [x["idempotency_key"] for x in lines] == ["k-one", "k-two"]
    assert lines[0]["ids"] == [one.json()["id"]] and lines[0]["scope"] == "tcp"
    assert lines[1]["ids"] == [e["id"] for e in two.json()["results"]]
    assert lines[1]["first_seq"] == lines[0]["seq"] + 1 and lines[1]["seq"] == lines[1]["first_seq"] + 2
    assert all(x["topic"] == topic and len(x["request_sha256"]) == 64 for x in lines)
    # The messages are dumped as before, and the KEY records are no damage.
    msgs = tool("dump", daemon.spool_dir)
    assert [json.loads(x)["value"] for x in msgs.stdout.splitlines()] == ["x", "a", "b"]
    ver = tool("verify", daemon.spool_dir)
    assert ver.returncode == 0, ver.stdout + ver.stderr


def test_ttl_expiry(kafka, ackd):
    daemon = ackd(config={"publish": {"idempotency_ttl_s": 1}})
    topic = new_topic(kafka)
    first = post(daemon.http, topic, b"x", ikey="k")
    assert post(daemon.http, topic, b"x", ikey="k").header("Idempotent-Replayed") == "true"
    time.sleep(1.2)
    second = post(daemon.http, topic, b"x", ikey="k")
    assert second.status == 200 and second.header("Idempotent-Replayed") is None
    assert second.json()["id"] != first.json()["id"]
    # Expired keys are not loaded again at start (the restart comes after the
    # second key expired too).
    time.sleep(1.2)
    daemon.restart()
    third = post(daemon.http, topic, b"other", ikey="k")
    assert third.status == 200 and third.header("Idempotent-Replayed") is None
    got = settle(kafka, topic, 3)
    assert len(got[b"x"]) == 2 and len(got[b"other"]) == 1


def test_keys_and_their_memory_in_metrics(kafka, ackd):
    """/metrics shows how many keys ackd remembers and the heap they take: a
    key counts once, however often it is repeated."""
    daemon = ackd()
    topic = new_topic(kafka)
    assert _metric(daemon, "ackd_idempotency_keys") == 0
    empty = _metric(daemon, "ackd_idempotency_bytes")
    assert post(daemon.http, topic, b"x", ikey="k1").status == 200
    assert _metric(daemon, "ackd_idempotency_keys") == 1
    one = _metric(daemon, "ackd_idempotency_bytes")
    assert one > empty
    assert post(daemon.http, topic, b"x", ikey="k1").header("Idempotent-Replayed") == "true"
    assert _metric(daemon, "ackd_idempotency_keys") == 1
    assert _metric(daemon, "ackd_idempotency_bytes") == one
    assert post(daemon.http, topic, b"y", ikey="k2").status == 200
    assert post(daemon.http, topic, b"z").status == 200
    assert _metric(daemon, "ackd_idempotency_keys") == 2
    assert _metric(daemon, "ackd_idempotency_bytes") > one


# --- kill -9 between request and answer ------------------------------------------

ROUNDS = 30


def test_sigkill_during_requests_one_copy_per_key(kafka, ackd):
    """Each round sends a keyed request (a single message or a batch of two,
    ack=kafka or spool) and kills ackd with SIGKILL after 0 to 25 ms, at a
    different point of the request each time (before it arrived, while it
    is written, while Kafka acknowledges, after the answer). ackd starts
    again and the client sends the same request until it gets a 2xx. Every
    2xx of a key carries the same ids, and Kafka holds one copy of each."""
    daemon = ackd()
    topic = new_topic(kafka, partitions=2)
    rnd = random.Random(13)
    answers = {}   # key -> list of id lists from 2xx answers
    values = {}    # key -> values it published
    first_ok = 0
    for i in range(ROUNDS):
        key = f"round-{i}-{uuid.uuid4().hex[:6]}"
        batch = i % 3 == 2
        ack = "spool" if i % 4 == 1 else "kafka"
        if batch:
            body = [{"value": f"{key}/a"}, {"value": f"{key}/b"}]
            values[key] = [f"{key}/a".encode(), f"{key}/b".encode()]
        else:
            body = key.encode()
            values[key] = [body]

        def send():
            r = post(daemon.http, topic, body, ikey=key, batch=batch, ack=ack)
            if r.status in (200, 202):
                return [e["id"] for e in r.json()["results"]] if batch else [r.json()["id"]]
            return None

        out = {}

        def first_try():
            try:
                out["ids"] = send()
            except OSError as e:
                out["err"] = e

        t = threading.Thread(target=first_try)
        t.start()
        time.sleep(rnd.uniform(0, 0.025))
        daemon.kill9()
        t.join(10)
        assert not t.is_alive()
        if out.get("ids"):
            answers.setdefault(key, []).append(out["ids"])
            first_ok += 1
        daemon.start()
        deadline = time.monotonic() + 30
        while True:
            ids = send()
            if ids:
                answers.setdefault(key, []).append(ids)
                break
            assert time.monotonic() < deadline, f"{key}: no 2xx after the restart"
            time.sleep(0.1)
    for key, lists in answers.items():
        assert all(ids == lists[0] for ids in lists), (key, lists)
    want = sum(len(v) for v in values.values())
    got = settle(kafka, topic, want)
    # One message per key: every copy in Kafka carries the id its answers gave.
    # A second copy with that same id is ackd's own crash duplicate (a record
    # Kafka had acknowledged when the kill came, before ackd could note it:
    # promise 3), not a second message; it is counted and shown.
    dups = 0
    for key, vs in values.items():
        for j, v in enumerate(vs):
            recs = got.get(v, [])
            assert recs, f"{v!r} is not in Kafka"
            ids = {r.header("ackd-id").decode() for r in recs}
            assert ids == {answers[key][0][j]}, (v, ids, answers[key])
            dups += len(recs) - 1
    found = daemon.stderr_text().count("it is not sent again")
    print(f"[idem kill -9] {ROUNDS} rounds, {first_ok} answered before the kill, "
          f"{want} values; {dups} crash duplicates of the same id; the start-up check "
          f"found {found} records already in Kafka")
    # The start-up check looks for unacknowledged keyed records in Kafka before
    # anything recovered is sent: a kill -9 between Kafka's write and the .ack
    # line no longer makes a second copy.
    assert dups == 0, f"{dups} second copies"


def _drop_acks(spool_dir):
    """Remove the .ack files and the keys file: the state a kill -9 leaves
    between Kafka's acknowledgement and ackd's note of it (the .ack entry,
    then the offset record in `keys`), for every record of the spool. The
    segments are all still there, so `keys` holds only offset records."""
    acks = list(Path(spool_dir).glob("*.ack"))
    assert acks, list(Path(spool_dir).iterdir())
    for f in acks:
        f.unlink()
    Path(spool_dir, "keys").unlink()


def _restart_losing_acks(daemon, found, keyed):
    """Stop, drop the acknowledgements (_drop_acks), start again and wait for
    the start-up check: it must have found `found` of `keyed` records."""
    daemon.stop()
    _drop_acks(daemon.spool_dir)
    daemon.start()
    wait_until(lambda: "idempotency check done" in daemon.stderr_text(), ARRIVAL_TIMEOUT,
               "the check to finish")
    log = daemon.stderr_text()
    assert (f"idempotency check done: {found} of {keyed} keyed records found in Kafka"
            in log), log


def _metric(daemon, name):
    for line in daemon.http.get("/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_check_finds_records_whose_ack_was_lost(kafka, ackd):
    """Constructed: keyed records Kafka holds, whose acknowledgements are gone
    from the spool (.ack files removed after a SIGTERM). At start the check
    finds them by ackd-id: none is produced again, and their keys replay 200
    with the partition and offset Kafka gave."""
    daemon = ackd()
    topic = new_topic(kafka, partitions=3)
    single = post(daemon.http, topic, b"one", ikey="k1", ack="kafka")
    pinned = post(daemon.http, topic, [{"value": "p", "partition": 2}], ikey="k2",
                  batch=True, ack="kafka")
    batch = post(daemon.http, topic, [{"value": "a"}, {"value": "b"}], ikey="k3",
                 batch=True, ack="kafka")
    assert single.status == 200 and pinned.status == 200 and batch.status == 200
    settle(kafka, topic, 4)
    _restart_losing_acks(daemon, 4, 4)
    assert _metric(daemon, "ackd_idempotency_check_found_total") == 4
    r = post(daemon.http, topic, b"one", ikey="k1", ack="kafka")
    assert r.status == 200 and r.header("Idempotent-Replayed") == "true", r.body
    b = single.json()
    assert (r.json()["partition"], r.json()["offset"]) == (b["partition"], b["offset"])
    r = post(daemon.http, topic, [{"value": "a"}, {"value": "b"}], ikey="k3", batch=True)
    assert r.status == 200, r.body
    assert [(e["partition"], e["offset"]) for e in r.json()["results"]] == \
        [(e["partition"], e["offset"]) for e in batch.json()["results"]]
    # Something new after the check goes out as usual.
    assert post(daemon.http, topic, b"after", ack="kafka").status == 200
    got = settle(kafka, topic, 5)
    assert {v: len(rs) for v, rs in got.items()} == \
        {b"one": 1, b"p": 1, b"a": 1, b"b": 1, b"after": 1}, got


@pytest.mark.parametrize("lists", [
    {"producer": ["message.max.bytes=20000000"], "consumer": ["fetch.max.bytes=10000000"]},
    {"producer": ["receive.message.max.bytes=10000000"], "consumer": []},
], ids=["message-max-bytes-over-fetch-max-bytes",
        "receive-message-max-bytes-under-fetch-max-bytes"])
def test_check_runs_when_the_two_lists_disagree_on_sizes(kafka, ackd, lists):
    """The check's reader takes kafka.producer's settings and kafka.consumer's
    on top. Sizes fine for each list alone, set in both (message.max.bytes
    over an explicit fetch.max.bytes; receive.message.max.bytes under the
    reader's default fetch.max.bytes + 512), made librdkafka refuse to create
    it, so the records went out unchecked: it must run and find them."""
    daemon = ackd(config={"kafka": lists})
    topic = new_topic(kafka, partitions=1)
    assert post(daemon.http, topic, b"one", ikey="k1", ack="kafka").status == 200
    settle(kafka, topic, 1)
    _restart_losing_acks(daemon, 1, 1)
    assert "cannot create a Kafka reader" not in daemon.stderr_text()
    assert post(daemon.http, topic, b"after", ack="kafka").status == 200
    got = settle(kafka, topic, 2)
    assert {v: len(rs) for v, rs in got.items()} == {b"one": 1, b"after": 1}, got


@pytest.mark.parametrize("timestamp,configs", [
    # Kafka's time retention counts from a record's timestamp: at its next
    # retention check (every 5 minutes) it deletes a 1970 record, even from
    # the active segment, unless the topic keeps records forever.
    ("1970-01-01T00:00:30Z", {"retention.ms": "-1"}),
    ("2100-01-01T00:00:00Z", {"message.timestamp.type": "LogAppendTime"}),
], ids=["v3-timestamp-near-the-epoch", "v3-future-timestamp-on-log-append-time"])
def test_check_finds_records_with_a_timestamp_of_their_own(kafka, ackd, timestamp, configs):
    """A REST Proxy v3 record carries the client's timestamp. The check looks
    from the earlier of that and the record's accept time: a timestamp 30 s
    after the epoch (the look-up time would be before it), and a timestamp in
    2100 on a topic that stamps the broker's time (Kafka holds the accept
    time, long before 2100). Both are found and not produced again."""
    daemon = ackd()
    topic = f"idem-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(topic, partitions=1, configs=configs)
    body = json.dumps({"value": {"type": "STRING", "data": "v3"},
                       "timestamp": timestamp}).encode()
    path = f"/v3/clusters/any/topics/{topic}/records"
    hdrs = {"Content-Type": "application/json", "Idempotency-Key": "v3-key"}
    first = daemon.http.post(path, body=body, headers=hdrs)
    assert first.status == 200, first.body
    settle(kafka, topic, 1)
    _restart_losing_acks(daemon, 1, 1)
    again = daemon.http.post(path, body=body, headers=hdrs)
    assert again.status == 200 and again.header("Idempotent-Replayed") == "true", again.body
    assert again.json()["offset"] == first.json()["offset"]
    assert post(daemon.http, topic, b"after", ack="kafka").status == 200
    got = settle(kafka, topic, 2)
    assert {v: len(rs) for v, rs in got.items()} == {b"v3": 1, b"after": 1}, got


def test_v3_timestamp_does_not_age_the_key(kafka, ackd):
    """A key lives publish.idempotency_ttl_s from its request, whatever
    timestamp a REST Proxy v3 record gives: a record stamped 1970 keeps its
    key across a restart."""
    daemon = ackd()
    topic = new_topic(kafka, configs={"retention.ms": -1})  # see the test above
    body = json.dumps({"value": {"type": "STRING", "data": "old"},
                       "timestamp": "1970-01-02T00:00:00Z"}).encode()
    path = f"/v3/clusters/any/topics/{topic}/records"
    hdrs = {"Content-Type": "application/json", "Idempotency-Key": "old-stamp"}
    first = daemon.http.post(path, body=body, headers=hdrs)
    assert first.status == 200, first.body
    daemon.stop()
    daemon.start()
    again = daemon.http.post(path, body=body, headers=hdrs)
    assert again.status == 200 and again.header("Idempotent-Replayed") == "true", again.body
    assert again.json()["offset"] == first.json()["offset"]
    got = settle(kafka, topic, 1)
    assert {v: len(rs) for v, rs in got.items()} == {b"old": 1}, got


def test_check_sees_past_another_producers_open_transaction(kafka, ackd):
    """Another producer's transaction left open on the topic pins its last
    stable offset below ackd's record: a read_committed reader would see
    nothing after it. The check reads uncommitted (ackd's records are never
    in a transaction), whatever kafka.consumer says, and finds the record."""
    from confluent_kafka import Producer

    topic = new_topic(kafka)
    tx = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": "tx-" + topic,
                   "transaction.timeout.ms": 600000})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce(topic, b"in-open-txn", partition=0)
    tx.flush(30)
    try:
        daemon = ackd(config={"kafka": {"consumer": ["isolation.level=read_committed"]}})
        first = post(daemon.http, topic, b"keyed", ikey="k1", ack="kafka")
        assert first.status == 200, first.body
        _restart_losing_acks(daemon, 1, 1)
    finally:
        tx.commit_transaction(30)
    got = settle(kafka, topic, 2)
    assert {v: len(rs) for v, rs in got.items()} == {b"in-open-txn": 1, b"keyed": 1}, got


def test_check_reads_with_the_producers_credentials(ackd):
    """A publish-only ackd has its SASL settings in kafka.producer alone
    (kafka.consumer empty): the check reads with them, finds the record, and
    what was published after the restart goes out."""
    users = {"admin": "admin-secret", "ackd": "ackd-secret"}
    with KafkaCluster(brokers=1, sasl={"mechanism": "PLAIN", "users": users}) as cluster:
        topic = f"idem-{uuid.uuid4().hex[:12]}"
        cluster.create_topic(topic, partitions=1)
        daemon = ackd(config={"kafka": {"producer": cluster.sasl_properties("ackd", None)}},
                      brokers=cluster.bootstrap)
        assert post(daemon.http, topic, b"keyed", ikey="k1", ack="kafka").status == 200
        daemon.stop()
        _drop_acks(daemon.spool_dir)
        daemon.start()
        assert post(daemon.http, topic, b"after", ack="kafka").status == 200
        log = daemon.stderr_text()
        assert "idempotency check done: 1 of 1 keyed records found in Kafka" in log, log
        got = {}
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while sorted(got.values()) != [1, 1] and time.monotonic() < deadline:
            time.sleep(0.2)
            got = {}
            for r in cluster.read_topic(topic):
                got[r.value] = got.get(r.value, 0) + 1
        assert got == {b"keyed": 1, b"after": 1}, got


def test_check_waits_for_kafka(ackd):
    """Kafka is down when ackd starts with a keyed record whose acknowledgement
    was lost: the check says so in the log and waits (the record is not sent
    unchecked); once the broker is back it finds the record, and Kafka still
    holds one copy."""
    with KafkaCluster(brokers=1) as cluster:
        daemon = ackd(brokers=cluster.bootstrap)
        topic = f"idem-{uuid.uuid4().hex[:12]}"
        cluster.create_topic(topic, partitions=1)
        first = post(daemon.http, topic, b"w", ikey="w", ack="kafka")
        assert first.status == 200, first.body
        daemon.stop()
        _drop_acks(daemon.spool_dir)
        cluster.stop_broker(1)
        daemon.start(wait=False)
        wait_until(lambda: "wait for the check before they are sent; retrying"
                   in daemon.stderr_text(), 30, "the check to say it waits")
        assert "idempotency check done" not in daemon.stderr_text()
        cluster.start_broker(1)
        wait_until(lambda: "idempotency check done" in daemon.stderr_text(), 60,
                   "the check to finish")
        log = daemon.stderr_text()
        assert "idempotency check done: 1 of 1 keyed records found in Kafka" in log, log
        r = post(daemon.http, topic, b"w", ikey="w", ack="kafka")
        assert r.status == 200, r.body
        assert r.json()["offset"] == first.json()["offset"]
        got = records_by_value(cluster, topic, 1)
        time.sleep(1.0)
        got = records_by_value(cluster, topic, 1)
        assert len(got[b"w"]) == 1, got


def test_check_without_keys_reads_nothing(kafka, ackd):
    """No keyed record pending: the check costs nothing (no Kafka read, no log)."""
    daemon = ackd()
    topic = new_topic(kafka)
    assert post(daemon.http, topic, b"x", ack="kafka").status == 200
    daemon.restart()
    assert post(daemon.http, topic, b"y", ack="kafka").status == 200
    assert "idempotency check" not in daemon.stderr_text()


def test_check_deleted_topic_sends_unverified(kafka, ackd):
    """A keyed record whose topic is gone: the check warns with the topic and
    the count, counts it, and lets the producer go on (it is not held forever)."""
    daemon = ackd()
    topic = new_topic(kafka)
    other = new_topic(kafka)
    assert post(daemon.http, topic, b"gone", ikey="g", ack="kafka").status == 200
    daemon.stop()
    _drop_acks(daemon.spool_dir)
    kafka.delete_topic(topic)
    daemon.start()
    wait_until(lambda: "idempotency check done" in daemon.stderr_text(), ARRIVAL_TIMEOUT,
               "the check to finish")
    log = daemon.stderr_text()
    assert f"idempotency check: topic {topic}: cannot read it" in log, log
    assert "its 1 unacknowledged keyed records are sent without it" in log, log
    assert _metric(daemon, "ackd_idempotency_check_unverified_total") == 1
    # The producer is not held by the check: new records go out.
    assert post(daemon.http, other, b"new", ack="kafka").status == 200


def spool_state(daemon):
    """What fills a spool, for an assertion's message: its files and sizes
    and the spool part of /v1/status."""
    files = sorted((f.name, f.stat().st_size) for f in daemon.spool_dir.iterdir()
                   if f.is_file())
    return files, daemon.http.get("/v1/status").json().get("spool")


def test_copied_forward_keyed_record_keeps_its_key(ackd):
    """A keyed record Kafka cannot take yet (its partition's only replica is
    down) stays while the records after it are delivered, so its segment is
    copied forward: the copy has a new sequence. After a restart its key
    must still follow it: once delivered, the key replays 200 with the
    partition and offset Kafka gave."""
    with KafkaCluster(brokers=3) as cluster:
        daemon = ackd(brokers=cluster.bootstrap,
                      config={"spool": {"max_bytes": 1048576}})  # 128 KiB segments
        stuck = f"idem-{uuid.uuid4().hex[:12]}"
        filler = f"idem-{uuid.uuid4().hex[:12]}"
        cluster.create_topic(stuck, partitions=1, rf=1)
        cluster.create_topic(filler, partitions=1)
        leader = cluster.admin().list_topics(topic=stuck, timeout=10) \
            .topics[stuck].partitions[0].leader
        cluster.stop_broker(leader)
        first = post(daemon.http, stuck, b"held", ikey="held", ack="spool")
        assert first.status == 202, first.body
        value = "f" * 1000
        for _ in range(20):
            r = post(daemon.http, filler, [{"value": value}] * 50, batch=True, ack="kafka")
            assert r.status == 200, f"{r.body[:120]!r}; spool: {spool_state(daemon)}"
        wait_until(lambda: "live records of segment" in daemon.stderr_text(), 30,
                   "the keyed record's segment copied forward")
        daemon.restart(wait=False)
        cluster.start_broker(leader)
        daemon.wait_healthy()

        def replay_200():
            r = post(daemon.http, stuck, b"held", ikey="held", ack="spool")
            assert r.status in (200, 202), r.body
            assert r.json()["id"] == first.json()["id"]
            return r.status == 200
        wait_until(replay_200, 60, "a 200 replay of the copied record's key")
        got = records_by_value(cluster, stuck, 1)
        time.sleep(1.0)
        got = records_by_value(cluster, stuck, 1)
        assert len(got[b"held"]) == 1, got
        r = post(daemon.http, stuck, b"held", ikey="held")
        assert (r.json()["partition"], r.json()["offset"]) == \
            (got[b"held"][0].partition, got[b"held"][0].offset)
