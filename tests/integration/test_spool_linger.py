"""publish.spool_linger_ms against a real Kafka broker (docs/ackd.conf.5).

Records no request waits for (published with ?ack=spool) stay in the spool up
to publish.spool_linger_ms before the kafka loop produces them, so that they
go to Kafka in fewer, larger requests:

    linger        an ack=spool record is not in Kafka after 1 s of a 3 s
                  linger, and is after about 3 s
    waiter        an ack=kafka request behind it is answered at once, and the
                  ack=spool record before it went to Kafka with it
    zero          spool_linger_ms = 0 produces every record at once
    many          10000 unsent records are produced at once
    window        records left over once librdkafka's window (32 MiB) was
                  filled still go within the linger, not one linger later
    steady        under a steady trickle of ack=spool records they go in
                  batches, one per linger, not one per record after the first
    stop          SIGTERM produces what was kept back before ackd exits, but
                  not while the start-up idempotency check is unfinished

Arrival is watched through the partition's high watermark, which a consumer
asks the broker for afresh each time; what arrived is then read back and
matched with the answers by ackd-id.
"""

import json
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from ackd_proc import find_spool_tool
from kafka import wait_until
from test_idempotency import _drop_acks, records_by_value

# The bytes of records librdkafka holds at most (WINDOW_BYTES, daemon/producer.c).
WINDOW_BYTES = 32 << 20


def new_topic(kafka, prefix="linger"):
    """A topic of one partition: offsets then are the order of production."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=1)
    return name


def linger_config(ms):
    return {"publish": {"spool_linger_ms": ms}}


@pytest.fixture
def watermark(kafka):
    """watermark(topic): partition 0's high watermark, asked of the broker now."""
    consumer = Consumer(kafka.client_config(**{"group.id": f"ackd-test-{uuid.uuid4()}",
                                               "enable.auto.commit": False}))

    def high(topic):
        _, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5,
                                               cached=False)
        return hi

    yield high
    consumer.close()


def warm_up(daemon, topic):
    """One ack=kafka record, so that ackd's producer is connected and knows the
    topic before a test times anything."""
    r = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"warm-up")
    assert r.status == 200, (r.status, r.body)
    return r.json()["offset"]


def linger_ackd(ackd, kafka, linger_ms):
    """An ackd with publish.spool_linger_ms = linger_ms and a new topic it has
    produced to once (warm_up): (daemon, topic)."""
    daemon = ackd(config=linger_config(linger_ms))
    topic = new_topic(kafka)
    warm_up(daemon, topic)
    return daemon, topic


def publish_spool(daemon, topic, value):
    r = daemon.http.post(f"/v1/topics/{topic}?ack=spool", body=value)
    assert r.status == 202, (r.status, r.body)
    assert r.json()["status"] == "spooled", r.body
    return r.json()["id"]


def ackd_id(record):
    value = record.header("ackd-id")
    return value.decode() if value is not None else None


def wait_arrival(watermark, topic, count, timeout):
    """Seconds until the partition holds count records (polled every 20 ms)."""
    start = time.monotonic()
    wait_until(lambda: watermark(topic) >= count, timeout,
               f"{count} record(s) in {topic}", interval=0.02)
    return time.monotonic() - start


def spool_stat(spool_dir):
    """ackd-spool stat as {name: value}."""
    r = subprocess.run([str(find_spool_tool()), "stat", str(spool_dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r
    out = {}
    for line in r.stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and not name.startswith("segment "):
            out[name] = value
    return out


# --- the linger ------------------------------------------------------------------

def test_an_ack_spool_record_stays_in_the_spool_for_the_linger(kafka, ackd, watermark):
    daemon, topic = linger_ackd(ackd, kafka, 3000)
    assert watermark(topic) == 1

    t0 = time.monotonic()
    rid = publish_spool(daemon, topic, b"kept back")
    time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert watermark(topic) == 1, "the ack=spool record was produced within 1 s of a 3 s linger"

    wait_until(lambda: watermark(topic) >= 2, 5, f"the ack=spool record in {topic}",
               interval=0.02)
    took = time.monotonic() - t0
    print(f"\n[linger] spool_linger_ms=3000: in Kafka after {took:.2f}s", flush=True)
    assert 2.5 <= took <= 5.0, took
    records = kafka.read_topic(topic)
    assert [(r.offset, r.value, ackd_id(r)) for r in records[1:]] == [(1, b"kept back", rid)]


def test_a_waited_record_goes_at_once_with_everything_before_it(kafka, ackd, watermark):
    daemon, topic = linger_ackd(ackd, kafka, 3000)

    t0 = time.monotonic()
    rid = publish_spool(daemon, topic, b"spooled first")
    r = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"waited for")
    took = time.monotonic() - t0
    print(f"\n[waiter] ack=kafka answered after {took:.2f}s of a 3 s linger", flush=True)
    assert r.status == 200, (r.status, r.body)
    assert took < 1.5, took
    answer = r.json()
    assert (answer["status"], answer["partition"], answer["offset"]) == ("delivered", 0, 2), answer

    # Produced before the waited record, so acknowledged by Kafka before it.
    assert watermark(topic) == 3
    records = kafka.read_topic(topic)
    assert [(r.offset, r.value, ackd_id(r)) for r in records[1:]] == [
        (1, b"spooled first", rid), (2, b"waited for", answer["id"])]


def test_zero_produces_an_ack_spool_record_at_once(kafka, ackd, watermark):
    daemon, topic = linger_ackd(ackd, kafka, 0)

    rid = publish_spool(daemon, topic, b"at once")
    took = wait_arrival(watermark, topic, 2, 1.0)
    print(f"\n[zero] spool_linger_ms=0: in Kafka after {took:.2f}s", flush=True)
    records = kafka.read_topic(topic)
    assert [(r.offset, r.value, ackd_id(r)) for r in records[1:]] == [(1, b"at once", rid)]


def test_ten_thousand_unsent_records_go_at_once(kafka, ackd, watermark):
    daemon, topic = linger_ackd(ackd, kafka, 10000)

    records = [{"value": f"m{i:05d}"} for i in range(10000)]
    t0 = time.monotonic()
    r = daemon.http.post(f"/v1/topics/{topic}/records?ack=spool",
                         body=json.dumps({"records": records}),
                         headers={"Content-Type": "application/json"})
    assert r.status == 202, (r.status, r.body[:300])
    ids = [e["id"] for e in r.json()["results"]]
    wait_until(lambda: watermark(topic) >= 10001, 5, f"10000 records in {topic}",
               interval=0.05)
    took = time.monotonic() - t0
    print(f"\n[many] 10000 ack=spool records in Kafka after {took:.2f}s of a 10 s linger",
          flush=True)
    got = kafka.read_topic(topic)[1:]
    assert [ackd_id(rec) for rec in got] == ids
    assert [rec.value for rec in got] == [rec["value"].encode() for rec in records]


def test_records_left_over_by_a_full_window_go_within_the_linger(kafka, ackd, watermark):
    """More bytes than librdkafka's window in a few dozen records: the records
    the full window left unsent are due once the linger is over, so all are in
    Kafka shortly after the later of the linger's end and the last publish.
    Restarting the linger for them (the bug this guards) put them one more
    linger (4 s) later, whatever the machine's speed."""
    linger = 4.0
    daemon, topic = linger_ackd(ackd, kafka, int(linger * 1000))

    size = 900_000
    count = WINDOW_BYTES // size + 8
    t0 = time.monotonic()
    for i in range(count):
        publish_spool(daemon, topic, f"{i:06d}".encode().ljust(size, b"."))
    published = time.monotonic() - t0
    wait_until(lambda: watermark(topic) >= count + 1, max(linger, published) + 10,
               f"{count} records in {topic}", interval=0.05)
    took = time.monotonic() - t0
    print(f"\n[window] {count} records of {size} bytes published in {published:.2f}s, "
          f"in Kafka after {took:.2f}s of a {linger:g} s linger", flush=True)
    assert took < max(linger, published) + 2.0, (took, published)


def record_batches(kafka, topic):
    """The record count of each record batch in partition 0's log files, in
    order, read from the broker's data directory (Kafka's on-disk format:
    batchLength at byte 8, recordsCount at byte 57 of each batch)."""
    counts = []
    for node in kafka.nodes:
        for log in sorted(Path(node.data_dir, f"{topic}-0").glob("*.log")):
            data = log.read_bytes()
            pos = 0
            while pos + 61 <= len(data):
                length = struct.unpack(">i", data[pos + 8:pos + 12])[0]
                if length <= 0:
                    break
                counts.append(struct.unpack(">i", data[pos + 57:pos + 61])[0])
                pos += 12 + length
    return counts


def test_a_steady_trickle_goes_in_one_batch_per_linger(kafka, ackd, watermark):
    """One client publishing ack=spool every few milliseconds for 2 s with a
    100 ms linger: the records reach Kafka in about one batch per linger. A
    linger that, once over, did not start again with the next record sent
    that record alone (before the fix: 29 batches for 533 records, ten of
    them of one or two records).

    librdkafka's own linger is 0.5 ms here so that each fill ackd hands over
    leaves in one request. With ackd's default of 0 librdkafka sends the first
    records of a fill as soon as it has them and the rest a round trip or two
    later (docs/ackd.conf.5): a record of its own would then not tell a
    record sent alone from a fill split in two."""
    daemon = ackd(config={**linger_config(100),
                          "kafka": {"producer": ["linger.ms=0.5"]}})
    topic = new_topic(kafka)
    warm_up(daemon, topic)

    published = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.0:
        publish_spool(daemon, topic, b"x" * 100)
        published += 1
        time.sleep(0.003)
    wait_until(lambda: watermark(topic) >= published + 1, 10,
               f"{published} records in {topic}", interval=0.05)
    wait_until(lambda: sum(record_batches(kafka, topic)) >= published + 1, 10,
               "the broker's log to hold them")
    batches = record_batches(kafka, topic)[1:]  # the warm-up record's own first
    print(f"\n[steady] {published} records in {len(batches)} batches: {batches}", flush=True)
    assert sum(batches) == published
    assert len(batches) <= published / 4, batches
    # Only the last linger's may be small; a few more for a fill split by
    # preemption on a busy machine.
    assert len([n for n in batches if n < 5]) <= 3, batches


# --- stop --------------------------------------------------------------------------

def test_sigterm_produces_what_was_kept_back_before_exiting(kafka, ackd, watermark):
    daemon, topic = linger_ackd(ackd, kafka, 10000)

    ids = [publish_spool(daemon, topic, f"kept {i}".encode()) for i in range(5)]
    assert watermark(topic) == 1, "the records were produced before the linger ended"
    status = daemon.http.get("/v1/status")
    assert status.status == 200, status.body
    spool = status.json()["spool"]
    assert spool["records"] == 5, spool
    t0 = time.monotonic()
    rc = daemon.stop()
    took = time.monotonic() - t0
    print(f"\n[stop] ackd exited {rc} {took:.2f}s after SIGTERM; spool before: {spool}",
          flush=True)
    assert rc == 0, daemon.stderr_text()
    assert took < 5.0, took

    # No ackd runs now: whatever is in Kafka, it produced before it exited.
    records = kafka.read_topic(topic)
    assert [(r.value, ackd_id(r)) for r in records[1:]] == \
        [(f"kept {i}".encode(), rid) for i, rid in enumerate(ids)]
    stat = spool_stat(daemon.spool_dir)
    assert stat["lock"].startswith("free"), stat
    assert int(stat["unacked records"]) == 0, stat


def test_a_stop_during_the_start_up_check_sends_nothing_unchecked(kafka, ackd):
    """A keyed record Kafka has although the spool lost its acknowledgement
    (a kill -9 between the two) is looked for at the next start before it is
    sent. Stopped while that check still waits for Kafka, ackd must not
    produce it on its way out: that is the second copy the check exists to
    prevent."""
    daemon = ackd()
    topic = new_topic(kafka)
    r = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"once",
                         headers={"Idempotency-Key": "once"})
    assert r.status == 200, (r.status, r.body)
    daemon.stop()
    _drop_acks(daemon.spool_dir)
    # The check's reader cannot reach Kafka; the producer can.
    daemon.settings["kafka"]["consumer"] = ["bootstrap.servers=127.0.0.1:1"]
    daemon.write_config()
    daemon.start(wait=False)
    wait_until(lambda: "wait for the check before they are sent" in daemon.stderr_text(),
               30, "the start-up check to wait for Kafka")
    daemon.stop()
    assert "idempotency check interrupted by the stop" in daemon.stderr_text()
    time.sleep(1.0)
    got = records_by_value(kafka, topic, 1)
    assert len(got[b"once"]) == 1, got
