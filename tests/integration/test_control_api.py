"""The Control API (docs/http-api.md): list, pause, resume, seek and redrive
subscriptions at run time, against a real Kafka broker and the in-process
webhook sink.

What a test asserts is what an operator would see: the answers, the group's
committed offsets read back from Kafka, what the endpoint received, and what
the dead-letter and source topics hold.
"""

import json
import os
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from kafka import wait_until
from test_webhook import (DELIVERY_TIMEOUT, coords, new_topic, produce_all, start_ackd,
                          subscription, wait_committed)
from webhook_sink import Reply


def post(daemon, path, body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is None:
        return daemon.http.post(path, headers=headers, timeout=30)
    return daemon.http.post(path, body=json.dumps(body), headers=headers, timeout=30)


def subs(daemon, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = daemon.http.get("/v1/subscriptions", headers=headers)
    assert r.status == 200, r.body
    return {s["name"]: s for s in r.json()["subscriptions"]}


def metric(daemon, line_start):
    text = daemon.http.get("/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in /metrics")


def msgs(n, start=0, **extra):
    return [{"value": f"m{start + i}".encode(), **extra} for i in range(n)]


def wait_partitions(daemon, name, count, timeout=30):
    """Until the subscription lists count partitions with a known lag."""
    def done():
        s = subs(daemon).get(name)
        return s is not None and len(s["partitions"]) == count
    wait_until(done, timeout, f"{count} partitions listed for {name}", interval=0.2)


# --- list, pause, resume -------------------------------------------------------

def test_pause_waits_for_requests_in_flight_commits_them_and_resume_delivers(
        kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink, ordering="none", max_in_flight=4)
    daemon = start_ackd(ackd, sub)
    # The first four are held 2 s by the endpoint: they are in flight at the pause.
    webhook_sink.script("/hook", *[Reply(200, delay=2.0) for _ in range(4)])
    produce_all(kafka, topic, msgs(4))
    webhook_sink.wait_for(4, timeout=DELIVERY_TIMEOUT)

    began = time.monotonic()
    r = post(daemon, "/v1/subscriptions/hook/pause")
    assert r.status == 200, r.body
    assert r.json()["state"] == "paused"
    assert r.json()["paused_by"] == ["operator"]
    assert r.json()["in_flight"] == 0
    assert time.monotonic() - began > 0.5, "answered before the requests in flight finished"
    # Committed before the answer: nothing to wait for.
    assert kafka.committed(sub["group"], topic) == {0: 4}

    produce_all(kafka, topic, msgs(3, start=4))
    time.sleep(3)
    assert len(webhook_sink.received()) == 4, "delivered while paused"
    s = subs(daemon)["hook"]
    assert s["state"] == "paused" and s["paused_by"] == ["operator"]
    assert s["group"] == sub["group"] and s["topics"] == [topic]
    assert s["window"] == 4 and s["rate_limit"] == 0
    wait_until(lambda: subs(daemon)["hook"]["partitions"] ==
               [{"topic": topic, "partition": 0, "committed": 4, "lag": 3}], 15,
               "lag 3 listed while paused", interval=0.3)
    assert metric(daemon, 'ackd_subscription_paused{subscription="hook"}') == 1
    status = daemon.http.get("/v1/status").json()["subscriptions"][0]
    assert status["paused"] is True and status["paused_by"] == ["operator"]

    r = post(daemon, "/v1/subscriptions/hook/resume")
    assert r.status == 200, r.body
    assert r.json()["state"] == "running" and r.json()["paused_by"] == []
    webhook_sink.wait_for(7, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 7})
    assert metric(daemon, 'ackd_subscription_paused{subscription="hook"}') == 0
    assert sorted(coords(q)[1] for q in webhook_sink.received()) == list(range(7))


def test_pause_survives_kill9_and_restart(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, msgs(2))
    webhook_sink.wait_for(2, timeout=DELIVERY_TIMEOUT)
    assert post(daemon, "/v1/subscriptions/hook/pause").status == 200
    assert (daemon.spool_dir / "paused" / "hook.json").exists()

    daemon.kill9()
    daemon.start()
    # Ready (listening) comes before the consumers start and say so.
    wait_until(lambda: "paused by an operator" in daemon.stderr_text(), 30,
               "the restarted subscription saying it is paused")
    produce_all(kafka, topic, msgs(3, start=2))
    wait_partitions(daemon, "hook", 1)
    time.sleep(3)
    assert len(webhook_sink.received()) == 2, "a paused subscription delivered after restart"
    assert subs(daemon)["hook"]["state"] == "paused"

    # And across a clean restart too.
    daemon.restart()
    time.sleep(2)
    assert len(webhook_sink.received()) == 2

    assert post(daemon, "/v1/subscriptions/hook/resume").status == 200
    assert not (daemon.spool_dir / "paused" / "hook.json").exists()
    webhook_sink.wait_for(5, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 5})


def test_410_paused_subscription_resumes_through_the_api(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    webhook_sink.script("/hook", 410)
    produce_all(kafka, topic, msgs(2))
    webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT)
    wait_until(lambda: subs(daemon)["hook"]["paused_by"] == ["endpoint_gone"], 15,
               "paused by the 410")
    assert metric(daemon, 'ackd_subscription_paused{subscription="hook"}') == 1
    time.sleep(1)
    assert len(webhook_sink.received()) == 1

    r = post(daemon, "/v1/subscriptions/hook/resume")
    assert r.status == 200 and r.json()["state"] == "running", r.body
    webhook_sink.wait_for(3, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 2})


# --- seek ------------------------------------------------------------------------

def test_seek_each_form_moves_and_commits(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    base = int(time.time() * 1000) - 100_000
    produce_all(kafka, topic, [{"value": f"m{i}".encode(), "timestamp": base + i * 1000}
                               for i in range(10)])
    webhook_sink.wait_for(10, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 10})
    # Seek while paused is allowed: nothing is delivered until resume.
    assert post(daemon, "/v1/subscriptions/hook/pause").status == 200

    def seek(body, expected):
        r = post(daemon, "/v1/subscriptions/hook/seek", body)
        assert r.status == 200, r.body
        assert r.json() == {"subscription": "hook", "partitions": [
            {"topic": topic, "partition": 0, "moved": True, "offset": expected}]}
        assert kafka.committed(sub["group"], topic) == {0: expected}

    seek({"to": "earliest"}, 0)
    seek({"to": "latest"}, 10)
    seek({"timestamp_ms": base + 6500}, 7)   # the first record at or after the time
    seek({"timestamp_ms": base + 10**7}, 10)  # after every record: the end
    seek({"offsets": [{"topic": topic, "partition": 0, "offset": 3}]}, 3)
    seek({"offsets": [{"topic": topic, "partition": 0, "offset": 99}]}, 10)  # kept in the log
    seek({"offsets": [{"topic": topic, "partition": 0, "offset": 4}]}, 4)
    time.sleep(1)
    assert len(webhook_sink.received()) == 10

    assert post(daemon, "/v1/subscriptions/hook/resume").status == 200
    got = webhook_sink.wait_for(16, timeout=DELIVERY_TIMEOUT)
    assert [coords(q)[1] for q in got[10:]] == [4, 5, 6, 7, 8, 9]
    wait_committed(kafka, sub["group"], topic, {0: 10})


def test_seek_back_with_a_request_in_flight_does_not_commit_past_it(
        kafka, ackd, webhook_sink):
    """A request out at seek time completes after the seek: its 2xx must not
    commit over the new position (offsets 0-4 must be delivered again)."""
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, msgs(5))
    webhook_sink.wait_for(5, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 5})

    seeked = threading.Event()

    def responder(req):
        if not seeked.is_set():
            return Reply(200, delay=3.0)  # offset 5: in flight during the seek
        return Reply(503)                 # the replay is refused: nothing completes
    webhook_sink.respond("/hook", responder)
    produce_all(kafka, topic, msgs(1, start=5))
    webhook_sink.wait_for(6, timeout=DELIVERY_TIMEOUT)
    seeked.set()
    r = post(daemon, "/v1/subscriptions/hook/seek", {"to": "earliest"})
    assert r.status == 200, r.body
    assert r.json()["partitions"][0]["offset"] == 0
    time.sleep(5)  # the held request answered 200 meanwhile; the replay got 503s
    assert kafka.committed(sub["group"], topic) == {0: 0}
    assert [coords(q)[1] for q in webhook_sink.received()][6] == 0


def test_seek_latest_skips_what_was_fetched_and_drops_the_answer_in_flight(
        kafka, ackd, webhook_sink):
    """Offsets 1-9 were fetched and waiting behind offset 0, which was in
    flight: after a seek to latest none of them is sent, and offset 0's late
    2xx moves nothing."""
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    webhook_sink.script("/hook", Reply(200, delay=3.0))
    produce_all(kafka, topic, msgs(10))
    webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT)
    r = post(daemon, "/v1/subscriptions/hook/seek", {"to": "latest"})
    assert r.status == 200, r.body
    assert r.json()["partitions"] == [{"topic": topic, "partition": 0, "moved": True,
                                       "offset": 10}]
    time.sleep(5)
    assert [coords(q)[1] for q in webhook_sink.received()] == [0]
    assert kafka.committed(sub["group"], topic) == {0: 10}
    produce_all(kafka, topic, msgs(1, start=10))
    got = webhook_sink.wait_for(2, timeout=DELIVERY_TIMEOUT)
    assert [coords(q)[1] for q in got] == [0, 10]
    wait_committed(kafka, sub["group"], topic, {0: 11})


def test_seek_with_two_instances_lists_the_others_partitions_as_not_moved(
        kafka, ackd, webhook_sink):
    topic = new_topic(kafka, partitions=2)
    sub = subscription(topic, webhook_sink)
    a = start_ackd(ackd, sub)
    b = start_ackd(ackd, sub)
    wait_until(lambda: len(subs(a)["hook"]["partitions"]) == 1 and
               len(subs(b)["hook"]["partitions"]) == 1, 60, "one partition each",
               interval=0.3)
    produce_all(kafka, topic, msgs(4, partition=0) + msgs(4, start=4, partition=1))
    webhook_sink.wait_for(8, timeout=DELIVERY_TIMEOUT)
    wait_committed(kafka, sub["group"], topic, {0: 4, 1: 4})
    mine = subs(a)["hook"]["partitions"][0]["partition"]
    other = 1 - mine

    r = post(a, "/v1/subscriptions/hook/seek", {"to": "earliest"})
    assert r.status == 200, r.body
    rows = {p["partition"]: p for p in r.json()["partitions"]}
    assert rows[mine] == {"topic": topic, "partition": mine, "moved": True, "offset": 0}
    assert rows[other] == {"topic": topic, "partition": other, "moved": False,
                           "offset": None}
    r = post(a, "/v1/subscriptions/hook/seek",
             {"offsets": [{"topic": topic, "partition": other, "offset": 1}]})
    assert r.status == 200, r.body
    assert r.json()["partitions"] == [{"topic": topic, "partition": other, "moved": False,
                                       "offset": None}]
    # Only a's partition is delivered again, and the other one stays committed.
    got = webhook_sink.wait_for(12, timeout=DELIVERY_TIMEOUT)
    assert sorted(coords(q) for q in got[8:]) == [(mine, o) for o in range(4)]
    wait_committed(kafka, sub["group"], topic, {0: 4, 1: 4})


# --- auth and bad input ------------------------------------------------------------

def test_admin_tokens(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub, config={"auth": {"tokens": [
        {"token": "publisher-token-0123456789", "topics": [topic]},
        {"token": "admin-token-0123456789", "admin": True}]}})
    for path, method in (("/v1/subscriptions", "GET"),
                         ("/v1/subscriptions/hook/pause", "POST"),
                         ("/v1/subscriptions/hook/seek", "POST")):
        r = daemon.http.request(method, path, body=b"" if method == "POST" else None)
        assert r.status == 401, (path, r.body)
        assert r.header("WWW-Authenticate") == "Bearer"
        r = daemon.http.request(method, path, body=b"" if method == "POST" else None,
                                headers={"Authorization": "Bearer publisher-token-0123456789"})
        assert r.status == 403, (path, r.body)
        assert r.json()["error"]["code"] == "forbidden"
    assert "hook" in subs(daemon, token="admin-token-0123456789")
    r = post(daemon, "/v1/subscriptions/hook/pause", token="admin-token-0123456789")
    assert r.status == 200, r.body
    r = post(daemon, "/v1/subscriptions/hook/resume", token="admin-token-0123456789")
    assert r.status == 200, r.body
    # The admin token publishes too (no topics: every topic).
    r = daemon.http.post(f"/v1/topics/{topic}?ack=spool", body=b"x",
                         headers={"Authorization": "Bearer admin-token-0123456789"})
    assert r.status == 202, r.body


def test_bad_input(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    wait_partitions(daemon, "hook", 1)

    def err(r, status, code):
        assert r.status == status, r.body
        assert r.json()["error"]["code"] == code
        return r.json()["error"]["message"]

    err(post(daemon, "/v1/subscriptions/nope/pause"), 404, "not_found")
    err(post(daemon, "/v1/subscriptions/nope/seek", {"to": "earliest"}), 404, "not_found")
    err(post(daemon, "/v1/subscriptions/hook/jump"), 404, "not_found")
    err(post(daemon, "/v1/subscriptions//pause"), 404, "not_found")
    r = daemon.http.get("/v1/subscriptions/hook/pause")
    err(r, 405, "method_not_allowed")
    assert r.header("Allow") == "POST"
    r = daemon.http.post("/v1/subscriptions", body=b"")
    err(r, 405, "method_not_allowed")
    assert r.header("Allow") == "GET, HEAD"

    seek = "/v1/subscriptions/hook/seek"
    assert "not JSON" in err(daemon.http.post(seek, body=b"{to:"), 400, "bad_request")
    assert "not JSON" in err(daemon.http.post(seek, body=b""), 400, "bad_request")
    assert "exactly one" in err(post(daemon, seek, {}), 400, "bad_request")
    assert "exactly one" in err(post(daemon, seek, {"to": "latest", "timestamp_ms": 1}),
                                400, "bad_request")
    assert err(post(daemon, seek, {"to": "middle"}), 400, "bad_request").startswith("to:")
    assert err(post(daemon, seek, {"timestamp_ms": "yesterday"}), 400,
               "bad_request").startswith("timestamp_ms:")
    assert err(post(daemon, seek, {"timestamp_ms": -1}), 400,
               "bad_request").startswith("timestamp_ms:")
    assert err(post(daemon, seek, {"offsets": []}), 400, "bad_request").startswith("offsets:")
    assert err(post(daemon, seek, {"offsets": [{"topic": topic, "partition": -1,
                                                "offset": 0}]}),
               400, "bad_request").startswith("offsets[0].partition:")
    assert err(post(daemon, seek, {"offsets": [{"topic": topic, "partition": 0}]}),
               400, "bad_request").startswith("offsets[0].offset:")
    assert err(post(daemon, seek, {"offsets": [{"topic": topic, "partition": 0, "offset": 1,
                                                "extra": 1}]}),
               400, "bad_request").startswith("offsets[0].extra:")
    assert err(post(daemon, seek, {"offsets": [{"topic": "other", "partition": 0,
                                                "offset": 1}]}),
               400, "bad_request").startswith("offsets[0].topic:")
    assert err(post(daemon, seek, {"offsets": [{"topic": topic, "partition": 0, "offset": 1},
                                               {"topic": topic, "partition": 0, "offset": 2}]}),
               400, "bad_request").startswith("offsets[1]:")
    assert err(post(daemon, seek, {"when": 1}), 400, "bad_request").startswith("when:")
    redrive = "/v1/subscriptions/hook/redrive"
    assert err(post(daemon, redrive, {"max": 0}), 400, "bad_request").startswith("max:")
    assert err(post(daemon, redrive, {"most": 1}), 400, "bad_request").startswith("most:")
    # Nothing of that changed anything.
    s = subs(daemon)["hook"]
    assert s["state"] == "running"
    assert daemon.running()


# --- redrive -------------------------------------------------------------------------

def header(record, name):
    values = [v for k, v in record.headers if k == name]
    return values[-1] if values else None


def test_redrive_end_to_end(kafka, ackd, webhook_sink):
    """Poison messages go to the dead-letter topic; once the endpoint takes
    them, redrive publishes them back (same key, value and headers, less
    ackd-dlq-*, plus ackd-redrive-count) and they are delivered."""
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq)
    daemon = start_ackd(ackd, sub)
    healed = threading.Event()
    webhook_sink.respond("/hook", lambda req: 200 if healed.is_set() or
                         not req.body.startswith(b"bad") else 400)
    produce_all(kafka, topic, [
        {"value": b"bad-0", "key": b"k0", "headers": [("trace", b"t0")]},
        {"value": b"good-1", "key": b"k1"},
        {"value": b"bad-2", "key": b"k2", "headers": [("trace", b"t2")]},
        {"value": b"bad-3", "key": None},
    ])
    wait_committed(kafka, sub["group"], topic, {0: 4})
    assert len(kafka.read_topic(dlq)) == 3
    healed.set()

    r = post(daemon, "/v1/subscriptions/hook/redrive", {"max": 2})
    assert r.status == 200, r.body
    assert r.json() == {"subscription": "hook", "dead_letter_topic": dlq,
                        "group": sub["group"] + ".redrive", "redriven": 2, "skipped": 0,
                        "stopped": False}
    assert kafka.committed(sub["group"] + ".redrive", dlq) == {0: 2}
    r = post(daemon, "/v1/subscriptions/hook/redrive")
    assert r.status == 200 and r.json()["redriven"] == 1, r.body
    r = post(daemon, "/v1/subscriptions/hook/redrive", {})
    assert r.status == 200 and r.json()["redriven"] == 0, r.body
    assert kafka.committed(sub["group"] + ".redrive", dlq) == {0: 3}

    # Back in the source topic, as they were.
    wait_until(lambda: len(kafka.read_topic(topic)) == 7, 30, "3 messages redriven")
    back = kafka.read_topic(topic)[4:]
    assert [(m.key, m.value) for m in back] == [(b"k0", b"bad-0"), (b"k2", b"bad-2"),
                                                (None, b"bad-3")]
    for m, trace in zip(back, (b"t0", b"t2", None)):
        assert header(m, "trace") == trace
        assert header(m, "ackd-redrive-count") == b"1"
        assert header(m, "ackd-id") is not None
        assert not [k for k, _ in m.headers if k.startswith("ackd-dlq-")]
    # And delivered this time.
    wait_committed(kafka, sub["group"], topic, {0: 7})
    delivered = [q for q in webhook_sink.received() if q.status == 200]
    assert sorted(q.body for q in delivered) == [b"bad-0", b"bad-2", b"bad-3", b"good-1"]
    assert {q.header("ackd-header-ackd-redrive-count") for q in delivered
            if q.body.startswith(b"bad")} == {"1"}


def test_redrive_interrupted_by_kill9_loses_and_skips_nothing(kafka, ackd, webhook_sink):
    """Dead letters are committed as redriven only once their copies are
    durable in the spool: a kill -9 in the middle of a redrive, then another
    redrive, republishes every one at least once."""
    total = 50000
    topic = new_topic(kafka)
    dlq = new_topic(kafka, prefix="dlq")
    group = f"grp-{topic}"
    sub = subscription(topic, webhook_sink, dead_letter_topic=dlq)
    produce_all(kafka, dlq, [{"value": f"d{i}".encode(), "key": f"k{i}".encode(),
                              "headers": [("ackd-dlq-source-topic", topic.encode()),
                                          ("ackd-dlq-reason", b"rejected")]}
                             for i in range(total)])
    daemon = start_ackd(ackd, sub)
    # Paused, so the test reads the source topic itself; redrive works while paused.
    assert post(daemon, "/v1/subscriptions/hook/pause").status == 200

    answers = []
    first = threading.Thread(target=lambda: answers.append(
        _try(post, daemon, "/v1/subscriptions/hook/redrive")))
    first.start()
    watch = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group + ".redrive",
                      "enable.auto.commit": False})
    try:
        wait_until(lambda: _committed(watch, dlq) > 0, 30, "the redrive to be under way",
                   interval=0.005)
        # One redrive at a time.
        r = post(daemon, "/v1/subscriptions/hook/redrive")
        assert r.status == 409 and "is running" in r.json()["error"]["message"], r.body
        daemon.kill9()
    finally:
        watch.close()
    first.join()
    assert not [a for a in answers if getattr(a, "status", None) == 200], \
        "the redrive ended before the kill: nothing was interrupted"
    before = kafka.committed(group + ".redrive", dlq)[0]
    assert 0 <= before < total

    daemon.start()
    began = time.monotonic()
    r = post(daemon, "/v1/subscriptions/hook/redrive")
    took = time.monotonic() - began
    assert r.status == 200, r.body
    assert r.json()["redriven"] == total - max(before, 0)
    assert kafka.committed(group + ".redrive", dlq) == {0: total}
    wait_until(lambda: _end(kafka, topic) >= total, 60, "every copy produced")
    values = [m.value for m in kafka.read_topic(topic, timeout=60)]
    missing = {f"d{i}".encode() for i in range(total)} - set(values)
    assert not missing, f"{len(missing)} dead letters never republished"
    print(f"redrive: {before} committed at the kill, {len(values)} copies for {total} "
          f"dead letters ({len(values) - total} republished twice); the second redrive "
          f"republished {total - max(before, 0)} in {took:.2f} s")


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        return e


def _committed(consumer, topic):
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=5)[0].offset
    except KafkaException:  # the group's coordinator still loading: not yet
        return -1


def _end(kafka, topic):
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "ends"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def test_redrive_without_dead_letter_topic_is_409(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    daemon = start_ackd(ackd, subscription(topic, webhook_sink))
    r = post(daemon, "/v1/subscriptions/hook/redrive")
    assert r.status == 409, r.body
    assert r.json()["error"]["code"] == "conflict"
    assert "dead_letter_topic" in r.json()["error"]["message"]


def test_seek_while_a_batch_waits_to_be_retried(kafka, ackd, webhook_sink):
    """A batch refused with 500 waits for its retry when a seek drops its
    messages: the retry must not send them (they were freed), and delivery
    goes on from the new position."""
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink,
                       batch={"max_messages": 10, "max_bytes": 1048576, "max_wait_ms": 200},
                       retry={"initial_ms": 1500, "max_ms": 1500})
    daemon = start_ackd(ackd, sub)
    seeked = threading.Event()
    webhook_sink.respond("/hook", lambda req: Reply(200) if seeked.is_set() else Reply(500))
    produce_all(kafka, topic, msgs(3))
    first = webhook_sink.wait_for(1, timeout=DELIVERY_TIMEOUT)[0]
    assert [m["offset"] for m in json.loads(first.body)["messages"]] == [0, 1, 2]
    seeked.set()
    r = post(daemon, "/v1/subscriptions/hook/seek", {"to": "latest"})
    assert r.status == 200, r.body
    assert r.json()["partitions"][0]["offset"] == 3
    time.sleep(3)  # past the batch's retry time
    produce_all(kafka, topic, msgs(1, start=3))
    wait_committed(kafka, sub["group"], topic, {0: 4})
    sent = [[m["offset"] for m in json.loads(q.body)["messages"]]
            for q in webhook_sink.received()]
    assert sent[0] == [0, 1, 2] and [3] in sent[1:], sent
    assert all(offsets == [3] for offsets in sent[1:]), sent
    assert daemon.running()
