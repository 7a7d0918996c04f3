"""The publish API of docs/http-api.md against a real Kafka broker, on both listeners.

Every test that publishes reads the topic back and compares what Kafka holds
(value byte for byte, key, headers, partition, offset) with what the client
sent and what ackd answered. Every error answer is checked for its status,
its code and the body shape {"error":{"code","message"}}; a refused request
must leave nothing in Kafka.
"""

import asyncio
import base64
import http.client
import json
import re
import resource
import select
import signal
import time
import uuid
from pathlib import Path

import pytest

from httpclient import Response
from kafka import wait_until

ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
DELIVERED_FIELDS = {"id", "status", "topic", "partition", "offset"}
SPOOLED_FIELDS = {"id", "status", "topic"}
ARRIVAL_TIMEOUT = 30

# The test broker runs with auto.create.topics.enable=false.


# --- helpers -----------------------------------------------------------------

@pytest.fixture(params=["tcp", "unix"])
def via(request):
    """Which listener a test talks to."""
    return request.param


def client_of(daemon, via):
    return daemon.http if via == "tcp" else daemon.unix


def unique_topic(prefix="pub"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_topic(kafka, partitions=1, prefix="pub"):
    name = unique_topic(prefix)
    kafka.create_topic(name, partitions=partitions)
    return name


def path_of(topic, batch=False, **query):
    """/v1/topics/{topic}[/records]?query; query values are used as written
    (already percent-encoded where needed)."""
    path = f"/v1/topics/{topic}" + ("/records" if batch else "")
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return path


def publish(client, topic, body=b"", headers=None, **query):
    return client.post(path_of(topic, **query), body=body, headers=headers or {})


def publish_batch(client, topic, records, headers=None, **query):
    body = json.dumps({"records": records}).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return client.post(path_of(topic, batch=True, **query), body=body, headers=hdrs)


def assert_error(r, status, code):
    """The answer is the error status with exactly {"error":{"code","message"}};
    returns the message."""
    assert r.status == status, (r.status, r.body)
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    doc = r.json()
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"code", "message"}, doc
    assert doc["error"]["code"] == code, doc
    message = doc["error"]["message"]
    assert isinstance(message, str) and message, doc
    return message


def assert_delivered(answer, topic):
    """One delivered entry (the single answer or an element of results)."""
    assert set(answer) == DELIVERED_FIELDS, answer
    assert answer["status"] == "delivered", answer
    assert answer["topic"] == topic, answer
    assert ULID.match(answer["id"]), answer
    assert isinstance(answer["partition"], int) and answer["partition"] >= 0, answer
    assert isinstance(answer["offset"], int) and answer["offset"] >= 0, answer


def assert_spooled(answer, topic):
    assert set(answer) == SPOOLED_FIELDS, answer
    assert answer["status"] == "spooled", answer
    assert answer["topic"] == topic, answer
    assert ULID.match(answer["id"]), answer


def delivered(r, topic):
    """The body of a 200 single answer, checked."""
    assert r.status == 200, (r.status, r.body)
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    answer = r.json()
    assert_delivered(answer, topic)
    return answer


def batch_results(r, status):
    assert r.status == status, (r.status, r.body)
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    doc = r.json()
    assert set(doc) == {"results"}, doc
    return doc["results"]


def wait_records(kafka, topic, count, timeout=ARRIVAL_TIMEOUT):
    """The topic's records once it holds at least count of them."""
    found = []

    def enough():
        found[:] = kafka.read_topic(topic)
        return len(found) >= count

    wait_until(enough, timeout, f"{count} record(s) in {topic}", interval=0.1)
    return list(found)


def record_at(records, partition, offset):
    matches = [r for r in records if r.partition == partition and r.offset == offset]
    assert len(matches) == 1, (partition, offset, records)
    return matches[0]


def header_names(record):
    return sorted(name for name, _ in record.headers)


def assert_ackd_id(record, ackd_id):
    """ackd-id appears once and is the id ackd answered."""
    ids = [v for k, v in record.headers if k == "ackd-id"]
    assert ids == [ackd_id.encode()], record.headers


def assert_nothing_but_sentinel(kafka, client, topic):
    """Nothing of a refused request reached Kafka: a message published after it
    with ack=kafka is the only one in the topic."""
    answer = delivered(publish(client, topic, b"sentinel", partition=0), topic)
    records = kafka.read_topic(topic)
    assert [(r.partition, r.offset, r.value) for r in records] == \
        [(0, answer["offset"], b"sentinel")], records


def murmur2(data):
    """org.apache.kafka.common.utils.Utils.murmur2, as a signed 32-bit int."""
    mask = 0xFFFFFFFF
    m = 0x5BD1E995
    r = 24
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key, partitions):
    """BuiltInPartitioner.partitionForKey: toPositive(murmur2(key)) % n."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def open_socket(client, timeout=10):
    conn = client.connection(timeout)
    conn.connect()
    return conn.sock


def raw_exchange(client, head, chunks=(), method="POST", timeout=10):
    """Send head (request line and headers, bytes) and then chunks as they are;
    read one response."""
    sock = open_socket(client, timeout)
    try:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        body = resp.read()
        return Response(resp.status, resp.reason, resp.headers, body)
    finally:
        sock.close()


def post_over_limit(client, path, body, headers=None, timeout=10):
    """POST a body whose Content-Length is over limits.max_body_bytes. ackd may
    answer before reading it and stop reading, so a failed write of the body
    is expected; the answer is read all the same, as an HTTP client must."""
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    sock = open_socket(client, timeout)
    try:
        sock.sendall(head)
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        sock.close()


def chunked_post(client, path, pieces, headers=None, timeout=10):
    """POST with Transfer-Encoding: chunked, one chunk per piece."""
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "Transfer-Encoding: chunked"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    return raw_exchange(client, head, chunks, timeout=timeout)


# --- the reference partitioner ---------------------------------------------

def test_murmur2_reference_matches_the_java_client_vectors():
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {k: murmur2(k) for k in vectors} == vectors


# --- single messages -------------------------------------------------------------

def test_single_ack_kafka_stores_exact_bytes_and_headers(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    value = b"\x00bin\xff\xfe\x80 not utf-8 \xc3\x28\x00\r\n"

    r = publish(client, topic, value, headers={
        "Content-Type": "application/octet-stream; x=1",
        "Kafka-Header-X-Trace": "trace-42",
        "Kafka-Header-Tenant": "Acme Corp",
        "X-Not-Forwarded": "no",
    })

    answer = delivered(r, topic)
    records = kafka.read_topic(topic)
    assert len(records) == 1
    rec = records[0]
    assert (rec.partition, rec.offset) == (answer["partition"], answer["offset"])
    assert rec.value == value
    assert rec.key is None
    assert header_names(rec) == ["ackd-id", "content-type", "tenant", "x-trace"]
    assert rec.header("content-type") == b"application/octet-stream; x=1"
    assert rec.header("x-trace") == b"trace-42"
    assert rec.header("tenant") == b"Acme Corp"
    assert_ackd_id(rec, answer["id"])


def test_single_empty_body_is_an_empty_value(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    answer = delivered(publish(client, topic, b""), topic)

    [rec] = kafka.read_topic(topic)
    assert rec.offset == answer["offset"]
    assert rec.value == b""
    assert rec.key is None
    assert header_names(rec) == ["ackd-id"]
    assert_ackd_id(rec, answer["id"])


def test_single_key_absent_empty_and_percent_decoded(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    cases = [({}, None), ({"key": ""}, b""), ({"key": "a%20b%2F"}, b"a b/"),
             ({"key": "%00%FF%C3%A9"}, b"\x00\xff\xc3\xa9")]

    answers = [delivered(publish(client, topic, f"v{i}", partition=0, **query), topic)
               for i, (query, _) in enumerate(cases)]

    records = kafka.read_topic(topic)
    assert len(records) == len(cases)
    for i, ((_, key), answer) in enumerate(zip(cases, answers)):
        rec = record_at(records, 0, answer["offset"])
        assert rec.value == f"v{i}".encode()
        assert rec.key == key, (i, rec.key)
        assert_ackd_id(rec, answer["id"])


def test_single_partition_parameter_is_honoured(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3)

    answers = {p: delivered(publish(client, topic, f"to {p}", partition=p, key="same"), topic)
               for p in (2, 0, 1, 2)}

    records = kafka.read_topic(topic)
    for p, answer in answers.items():
        assert answer["partition"] == p
        rec = record_at(records, p, answer["offset"])
        assert rec.value == f"to {p}".encode()
        assert rec.key == b"same"


def test_keys_pick_partitions_like_the_java_client(ackd, kafka, via):
    client = client_of(ackd(), via)
    partitions = 6
    topic = new_topic(kafka, partitions=partitions)
    keys = [b"21", b"foobar", b"abc", b"a-little-bit-long-string",
            b"a-little-bit-longer-string", b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"]
    expected = {k: java_partition(k, partitions) for k in keys}
    assert len(set(expected.values())) >= 3  # the keys spread: the check means something

    sent = []
    for round_ in range(2):
        for key in keys:
            answer = delivered(publish(client, topic, b"r%d" % round_,
                                       key=key.decode()), topic)
            sent.append((key, answer))
    binary = b"\x00\xffkey\x80"
    batch = batch_results(publish_batch(client, topic, [
        {"key_b64": base64.b64encode(binary).decode(), "value": "bin"},
        {"key": "foobar", "value": "batch"}]), 200)

    for key, answer in sent:
        assert answer["partition"] == expected[key], (key, answer)
    assert batch[0]["partition"] == java_partition(binary, partitions)
    assert batch[1]["partition"] == expected[b"foobar"]
    records = kafka.read_topic(topic)
    assert len(records) == len(sent) + 2
    for rec in records:
        assert rec.partition == java_partition(rec.key, partitions), rec


def test_keyless_records_share_a_partition_for_a_moment(ackd, kafka, via):
    """Records without a key go to one partition for a few milliseconds at a
    time (sticky.partitioning.linger.ms, docs/ackd.conf.5), so that a burst
    travels in one produce request; spaced out, they still spread."""
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3)
    # Until librdkafka has handed a new topic's partitions to their leaders
    # it takes none as available and picks one at random for each record.
    delivered(publish(client, topic, "warm-up"), topic)

    burst = batch_results(publish_batch(client, topic,
                                        [{"value": f"b{i}"} for i in range(200)]), 200)
    spaced = []
    for i in range(30):
        spaced.append(delivered(publish(client, topic, f"s{i}"), topic)["partition"])
        time.sleep(0.02)

    counts = {p: sum(1 for r in burst if r["partition"] == p) for p in range(3)}
    print(f"\n[sticky] burst of 200 by partition {counts}; 30 spaced out: {spaced}", flush=True)
    # The kafka loop produces the batch in well under 5 ms, but a window may
    # end within it, twice if the thread waits for a CPU: one partition still
    # holds half. A partition picked for each record (a mean of 67, a
    # standard deviation of 6.7) gets 100 with a chance of about 1e-6.
    assert max(counts.values()) >= 100, counts
    # 20 ms apart, each record starts a window of its own.
    assert len(set(spaced)) > 1, spaced


def test_ack_spool_answers_202_and_the_message_arrives(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    value = b"spooled \x00\xff"

    r = publish(client, topic, value, headers={"Kafka-Header-X-Trace": "s"}, ack="spool",
                key="k")

    assert r.status == 202, r.body
    answer = r.json()
    assert_spooled(answer, topic)
    [rec] = wait_records(kafka, topic, 1)
    assert rec.value == value
    assert rec.key == b"k"
    assert rec.header("x-trace") == b"s"
    assert_ackd_id(rec, answer["id"])


def test_publish_ack_setting_is_the_default_and_the_query_overrides_it(ackd, kafka, via):
    client = client_of(ackd(config={"publish": {"ack": "spool"}}), via)
    topic = new_topic(kafka)

    by_default = publish(client, topic, b"default")
    asked = publish(client, topic, b"asked", ack="kafka")

    assert by_default.status == 202, by_default.body
    assert_spooled(by_default.json(), topic)
    answer = delivered(asked, topic)
    records = wait_records(kafka, topic, 2)
    assert sorted(r.value for r in records) == [b"asked", b"default"]
    assert record_at(records, 0, answer["offset"]).value == b"asked"


def test_ids_are_unique_ulids_sorted_by_time(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    ids = [delivered(publish(client, topic, b"x"), topic)["id"] for _ in range(20)]

    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(ULID.match(i) for i in ids)
    assert [r.header("ackd-id").decode() for r in kafka.read_topic(topic)] == ids


def test_a_249_character_topic_is_valid(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = unique_topic("t").ljust(249, "x")
    kafka.create_topic(topic)

    answer = delivered(publish(client, topic, b"long name"), topic)

    [rec] = kafka.read_topic(topic)
    assert (rec.offset, rec.value) == (answer["offset"], b"long name")


# --- batches -------------------------------------------------------------------

def test_batch_delivers_every_record_in_order(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3)
    raw = b"\x00\x01\xff\xfe\x80"
    records = [
        {"key": "k1", "value": {"any": "json"}, "headers": {"h": "v", "X-Up": "Kept"},
         "partition": 0},
        {"key_b64": "AAE=", "value_b64": "3q2+7w=="},
        {"value": "plain text", "partition": 2},
        {"key": "", "value_b64": base64.b64encode(raw).decode(), "partition": 1},
        {"value": "", "partition": 2, "headers": {}},
        {"value_b64": "", "key": "k1"},
    ]
    expected = [  # (key, value, headers other than ackd-id)
        (b"k1", b'{"any":"json"}', [("h", b"v"), ("X-Up", b"Kept")]),
        (b"\x00\x01", b"\xde\xad\xbe\xef", []),
        (None, b"plain text", []),
        (b"", raw, []),
        (None, b"", []),
        (b"k1", b"", []),
    ]

    results = batch_results(publish_batch(client, topic, records), 200)

    assert len(results) == len(records)
    for result in results:
        assert_delivered(result, topic)
    assert len({r["id"] for r in results}) == len(results)
    assert [r["id"] for r in results] == sorted(r["id"] for r in results)
    for i, p in [(0, 0), (2, 2), (3, 1), (4, 2)]:
        assert results[i]["partition"] == p, (i, results[i])
    assert results[1]["partition"] == java_partition(b"\x00\x01", 3)
    assert results[5]["partition"] == java_partition(b"k1", 3)
    stored = kafka.read_topic(topic)
    assert len(stored) == len(records)
    for i, (result, (key, value, headers)) in enumerate(zip(results, expected)):
        rec = record_at(stored, result["partition"], result["offset"])
        assert rec.key == key, i
        assert rec.value == value, i
        assert [h for h in rec.headers if h[0] != "ackd-id"] == headers, i
        assert_ackd_id(rec, result["id"])
    # In order: records sent to the same partition have increasing offsets.
    on_two = [results[2]["offset"], results[4]["offset"]]
    assert on_two == sorted(on_two) and on_two[0] != on_two[1]


@pytest.mark.parametrize("value_text, stored", [
    ('"a string"', b"a string"),
    ('"caf\\u00e9 \\u2603"', "café ☃".encode()),
    ('"nul\\u0000inside"', b"nul\x00inside"),
    ('""', b""),
    ('{ "b" : [1, 2,  {"c": null}], "a" : "x" }', b'{"b":[1,2,{"c":null}],"a":"x"}'),
    ('{}', b"{}"),
    ('42', b"42"),
    ('-7', b"-7"),
    ('1.5', b"1.5"),
    ('0.1', b"0.1"),
    ('[1, "two", false, null]', b'[1,"two",false,null]'),
    ('[]', b"[]"),
    ('true', b"true"),
    ('false', b"false"),
    ('null', b"null"),
], ids=["string", "unicode", "nul", "empty-string", "object", "empty-object", "int",
        "negative", "real", "tenth", "array", "empty-array", "true", "false", "null"])
def test_batch_json_values_are_sent_as_compact_json(ackd, kafka, via, value_text, stored):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    body = '{"records": [{"value": %s}]}' % value_text

    r = client.post(path_of(topic, batch=True), body=body.encode(),
                    headers={"Content-Type": "application/json"})

    [result] = batch_results(r, 200)
    assert_delivered(result, topic)
    [rec] = kafka.read_topic(topic)
    assert rec.value == stored
    assert rec.key is None
    assert header_names(rec) == ["ackd-id"]
    assert_ackd_id(rec, result["id"])


def test_batch_ack_spool_answers_202_and_every_record_arrives(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=2)
    records = [{"value": f"s{i}", "partition": i % 2} for i in range(5)]

    results = batch_results(publish_batch(client, topic, records, ack="spool"), 202)

    assert len(results) == 5
    for result in results:
        assert_spooled(result, topic)
    stored = wait_records(kafka, topic, 5)
    by_id = {r.header("ackd-id").decode(): r for r in stored}
    assert sorted(by_id) == sorted(r["id"] for r in results)
    for i, result in enumerate(results):
        rec = by_id[result["id"]]
        assert (rec.partition, rec.value) == (i % 2, f"s{i}".encode())


# --- 400 bad_request ------------------------------------------------------------

BAD_TOPICS = {
    "250-chars": "a" * 250,
    "dot": ".",
    "dotdot": "..",
    "space": "bad%20topic",
    "percent-encoded": "a%25b",
    "control": "a%0Ab",
    "star": "bad*topic",
    "non-ascii": "caf%C3%A9",
}


@pytest.mark.parametrize("topic", BAD_TOPICS.values(), ids=BAD_TOPICS.keys())
def test_invalid_topic_names_are_400(ackd, via, topic):
    client = client_of(ackd(), via)

    single = publish(client, topic, b"v")
    batch = publish_batch(client, topic, [{"value": "v"}])

    assert_error(single, 400, "bad_request")
    assert_error(batch, 400, "bad_request")


@pytest.mark.parametrize("partition", ["-1", "x", "99999999999", "2147483648", "", "1.0",
                                       "0x1", "%201"])
def test_bad_partition_parameter_is_400(ackd, kafka, via, partition):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    r = publish(client, topic, b"v", partition=partition)

    assert "partition" in assert_error(r, 400, "bad_request")
    assert_nothing_but_sentinel(kafka, client, topic)


@pytest.mark.parametrize("ack", ["all", "", "KAFKA", "1"])
def test_bad_ack_parameter_is_400(ackd, kafka, via, ack):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    single = publish(client, topic, b"v", ack=ack)
    batch = publish_batch(client, topic, [{"value": "v"}], ack=ack)

    assert "ack" in assert_error(single, 400, "bad_request")
    assert "ack" in assert_error(batch, 400, "bad_request")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_a_partition_the_topic_does_not_have_is_400(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=2)

    single = publish(client, topic, b"v", partition=2)
    batch = publish_batch(client, topic, [{"value": "ok", "partition": 1},
                                          {"value": "no", "partition": 5}])

    assert "partition" in assert_error(single, 400, "bad_request")
    assert "records[1]" in assert_error(batch, 400, "bad_request")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_partitions_added_while_ackd_runs_take_records(ackd, kafka, via):
    """Partitions can be added to a topic. ackd's cache of partition counts
    refreshes every minute and its producer's metadata every few minutes, so
    a record for a new partition used to be refused (400) for up to a minute,
    and one accepted into the spool was then moved to failed/ because
    librdkafka did not know the partition yet. Now ackd asks Kafka again and
    the records reach their partitions."""
    daemon = ackd()
    client = client_of(daemon, via)
    topic = new_topic(kafka, partitions=1)
    # Both the cache and the producer learn of the topic with one partition.
    delivered(publish(client, topic, b"before", partition=0), topic)

    kafka.add_partitions(topic, 3)
    time.sleep(1.2)  # the cache asks Kafka again about a topic at most once a second
    answers = [delivered(publish(client, topic, b"kafka 1", partition=1), topic),
               delivered(publish(client, topic, b"kafka 2", partition=2), topic)]
    spooled = publish(client, topic, b"spool 2", partition=2, ack="spool")
    assert spooled.status == 202, (spooled.status, spooled.body)
    batch = publish_batch(client, topic, [{"value": "batch 1", "partition": 1},
                                          {"value": "batch 0", "partition": 0}])
    for answer in batch_results(batch, 200):
        assert_delivered(answer, topic)

    records = wait_records(kafka, topic, 6)
    assert len(records) == 6, records
    for answer, p in zip(answers, (1, 2)):
        assert answer["partition"] == p, answer
        assert record_at(records, p, answer["offset"]).value == f"kafka {p}".encode()
    by_value = {r.value: r.partition for r in records}
    assert by_value[b"spool 2"] == 2 and by_value[b"batch 1"] == 1, by_value
    failed = Path(daemon.spool_dir, "failed")
    assert not failed.exists() or not any(failed.iterdir()), list(failed.iterdir())
    # Still refused: a partition the topic does not have after Kafka was asked again.
    assert "partition" in assert_error(publish(client, topic, b"v", partition=3), 400,
                                       "bad_request")


BAD_BATCHES = {
    "truncated": (b'{"records":[{"value":"a"}', None),
    "trailing-comma": (b'{"records":[{"value":"a"},]}', None),
    "not-json": (b"records=a", None),
    "empty-body": (b"", None),
    "not-an-object": (b'[{"value":"a"}]', None),
    "no-records": (b'{"items":[]}', None),
    "records-not-array": (b'{"records":{"value":"a"}}', None),
    "invalid-utf8": (b'{"records":[{"value":"\xff"}]}', None),
    "bad-value-b64": (b'{"records":[{"value":"a"},{"value":"b"},{"value_b64":"not base64!"}]}',
                      "records[2]"),
    "bad-b64-padding": (b'{"records":[{"value":"a"},{"value_b64":"QQ="}]}', "records[1]"),
    "bad-key-b64": (b'{"records":[{"value":"a","key_b64":"%%%%"}]}', "records[0]"),
    "no-value": (b'{"records":[{"value":"a"},{"key":"k"}]}', "records[1]"),
    "value-and-b64": (b'{"records":[{"value":"a","value_b64":"QQ=="}]}', "records[0]"),
    "key-not-string": (b'{"records":[{"value":"a"},{"value":"b","key":7}]}', "records[1]"),
    "header-not-string": (b'{"records":[{"value":"a","headers":{"h":1}}]}', "records[0]"),
    "headers-not-object": (b'{"records":[{"value":"a"},{"value":"b","headers":["h"]}]}',
                           "records[1]"),
    "partition-negative": (b'{"records":[{"value":"a"},{"value":"b","partition":-1}]}',
                           "records[1]"),
    "partition-string": (b'{"records":[{"value":"a","partition":"x"}]}', "records[0]"),
    "partition-huge": (b'{"records":[{"value":"a"},{"value":"a","partition":99999999999}]}',
                       "records[1]"),
    "partition-real": (b'{"records":[{"value":"a","partition":1.5}]}', "records[0]"),
    "record-not-object": (b'{"records":[{"value":"a"},"b"]}', "records[1]"),
}


@pytest.mark.parametrize("body, names", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_bad_batches_are_400_naming_the_record(ackd, kafka, via, body, names):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    r = client.post(path_of(topic, batch=True), body=body,
                    headers={"Content-Type": "application/json"})

    message = assert_error(r, 400, "bad_request")
    if names:
        assert names in message, message
    assert_nothing_but_sentinel(kafka, client, topic)


@pytest.mark.parametrize("query", [{"key": "k"}, {"partition": "0"}])
def test_batch_refuses_key_and_partition_parameters(ackd, kafka, via, query):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    r = publish_batch(client, topic, [{"value": "v"}], **query)

    assert_error(r, 400, "bad_request")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_the_ackd_id_header_cannot_be_set_by_the_client(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)

    single = publish(client, topic, b"v", headers={"Kafka-Header-Ackd-Id": "mine"})
    batch = publish_batch(client, topic, [{"value": "v"},
                                          {"value": "w", "headers": {"ackd-id": "mine"}}])

    assert_error(single, 400, "bad_request")
    assert "records[1]" in assert_error(batch, 400, "bad_request")
    assert_nothing_but_sentinel(kafka, client, topic)


# --- 401 / 403 --------------------------------------------------------------------

TOKENS = {"auth": {"tokens": [{"token": "tok-alpha-0123456789", "topics": ["alpha-*"]},
                              {"token": "tok-beta-0123456789", "topics": ["beta-*"]}]}}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("headers", [
    {},
    bearer("tok-alpha-012345678"),
    bearer("tok-alpha-01234567890"),
    bearer("wrong"),
    bearer(""),
    {"Authorization": "tok-alpha-0123456789"},
    {"Authorization": "Basic dG9rLWFscGhhLTAxMjM0NTY3ODk="},
], ids=["none", "prefix", "longer", "wrong", "empty", "no-scheme", "basic"])
def test_without_a_valid_token_publishing_is_401(ackd, kafka, via, headers):
    client = client_of(ackd(config=TOKENS), via)
    topic = new_topic(kafka, prefix="alpha")

    single = publish(client, topic, b"v", headers=headers)
    batch = publish_batch(client, topic, [{"value": "v"}], headers=headers)

    for r in (single, batch):
        assert_error(r, 401, "unauthorized")
        assert r.header("www-authenticate") == "Bearer"
    assert kafka.read_topic(topic) == []


def test_a_token_publishes_only_to_its_topics(ackd, kafka, via):
    client = client_of(ackd(config=TOKENS), via)
    alpha = new_topic(kafka, prefix="alpha")
    beta = new_topic(kafka, prefix="beta")
    gamma = new_topic(kafka, prefix="gamma")

    ok = publish(client, alpha, b"a", headers=bearer("tok-alpha-0123456789"))
    ok_batch = publish_batch(client, beta, [{"value": "b"}],
                             headers=bearer("tok-beta-0123456789"))
    other = publish(client, beta, b"x", headers=bearer("tok-alpha-0123456789"))
    other_batch = publish_batch(client, alpha, [{"value": "x"}],
                                headers=bearer("tok-beta-0123456789"))
    neither = publish(client, gamma, b"x", headers=bearer("tok-alpha-0123456789"))

    answer = delivered(ok, alpha)
    [result] = batch_results(ok_batch, 200)
    assert_delivered(result, beta)
    for r in (other, other_batch, neither):
        assert_error(r, 403, "forbidden")
    assert [(r.offset, r.value) for r in kafka.read_topic(alpha)] == [(answer["offset"], b"a")]
    assert [(r.offset, r.value) for r in kafka.read_topic(beta)] == [(result["offset"], b"b")]
    assert kafka.read_topic(gamma) == []


def test_publish_topics_globs_allow_and_forbid(ackd, kafka, via):
    client = client_of(ackd(config={"publish": {"topics": ["glob-ok-*", "exact-name-*.x"]}}),
                       via)
    allowed = new_topic(kafka, prefix="glob-ok")
    exact = unique_topic("exact-name") + ".x"
    kafka.create_topic(exact)
    refused = new_topic(kafka, prefix="glob-no")
    near = unique_topic("exact-name") + ".xy"
    kafka.create_topic(near)

    delivered(publish(client, allowed, b"a"), allowed)
    delivered(publish(client, exact, b"e"), exact)
    assert_error(publish(client, refused, b"r"), 403, "forbidden")
    assert_error(publish_batch(client, refused, [{"value": "r"}]), 403, "forbidden")
    assert_error(publish(client, near, b"n"), 403, "forbidden")
    assert_error(publish(client, unique_topic("never-created"), b"n"), 403, "forbidden")

    assert [r.value for r in kafka.read_topic(allowed)] == [b"a"]
    assert [r.value for r in kafka.read_topic(exact)] == [b"e"]
    assert kafka.read_topic(refused) == []
    assert kafka.read_topic(near) == []


# --- 404 / 405 ------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/topics/t/other"),
    ("POST", "/v1/topics/t/records/extra"),
    ("POST", "/v1/topic/t"),
    ("POST", "/v2/topics/t"),
    ("POST", "/"),
    ("GET", "/v1/topics/t/records/"),
    ("DELETE", "/nope"),
])
def test_unknown_paths_are_404_not_found(ackd, via, method, path):
    client = client_of(ackd(), via)

    r = client.request(method, path, body=b"v" if method == "POST" else None)

    assert_error(r, 404, "not_found")


def test_a_topic_kafka_does_not_have_is_404_unknown_topic(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = unique_topic("absent")

    single = publish(client, topic, b"v")
    again = publish(client, topic, b"v", ack="spool")
    batch = publish_batch(client, topic, [{"value": "v"}])

    for r in (single, again, batch):
        assert topic in assert_error(r, 404, "unknown_topic")
    kafka.create_topic(topic)
    # ackd asks Kafka again a little later; until then it may still say 404.
    wait_until(lambda: publish(client, topic, b"sentinel").status == 200, 15,
               f"ackd to see the new topic {topic}", interval=0.2)
    assert [r.value for r in kafka.read_topic(topic)] == [b"sentinel"]


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/v1/topics/t", "POST"),
    ("PUT", "/v1/topics/t", "POST"),
    ("DELETE", "/v1/topics/t", "POST"),
    ("GET", "/v1/topics/t/records", "POST"),
    ("PATCH", "/v1/topics/t/records", "POST"),
    ("POST", "/healthz", "GET"),
    ("DELETE", "/healthz", "GET"),
])
def test_wrong_methods_are_405_with_allow(ackd, via, method, path, allowed):
    client = client_of(ackd(), via)

    r = client.request(method, path, body=b"v" if method in ("POST", "PUT", "PATCH") else None)

    assert_error(r, 405, "method_not_allowed")
    allow = [m.strip() for m in (r.header("allow") or "").split(",")]
    assert allowed in allow, r.headers
    assert method not in allow


# --- when an error is answered ------------------------------------------------------

def test_an_error_is_answered_after_the_body_the_client_is_sending(ackd, kafka, via):
    client = client_of(ackd(config=TOKENS), via)
    topic = new_topic(kafka, prefix="alpha")
    body = b"x" * 100
    sock = open_socket(client)
    try:
        sock.sendall((f"POST {path_of(topic)} HTTP/1.1\r\nHost: localhost\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        # Refused from the headers (no token), but the client is still sending:
        # ackd waits for the body instead of answering and closing under it.
        readable, _, _ = select.select([sock], [], [], 0.5)
        assert readable == []
        sock.sendall(body)
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        r = Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        sock.close()

    assert_error(r, 401, "unauthorized")
    assert kafka.read_topic(topic) == []


def test_an_error_is_answered_at_once_to_a_client_waiting_for_100_continue(ackd, via):
    client = client_of(ackd(), via)
    head = (f"POST {path_of('..')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
            f"Expect: 100-continue\r\n\r\n").encode()

    r = raw_exchange(client, head, timeout=5)  # the body is never sent

    assert_error(r, 400, "bad_request")


# --- 413 / 415 ------------------------------------------------------------------------

LIMITS = {"limits": {"max_body_bytes": 1024, "max_batch_records": 3}}


def test_a_body_at_the_limit_is_accepted_and_one_byte_more_is_413(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)
    at_limit = bytes(range(256)) * 4

    too_big = post_over_limit(client, path_of(topic), at_limit + b"!")
    answer = delivered(publish(client, topic, at_limit), topic)

    assert "max_body_bytes" in assert_error(too_big, 413, "payload_too_large")
    assert [(r.offset, r.value) for r in kafka.read_topic(topic)] == [(answer["offset"],
                                                                      at_limit)]


def test_content_length_over_the_limit_is_refused_before_the_body(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)
    head = (f"POST {path_of(topic)} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: 50000000\r\n\r\n").encode()

    # No body follows: ackd must answer from the headers alone.
    r = raw_exchange(client, head, timeout=5)

    assert_error(r, 413, "payload_too_large")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_a_chunked_body_over_the_limit_is_413(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)

    r = chunked_post(client, path_of(topic), [b"a" * 600, b"b" * 300, b"c" * 125])

    assert_error(r, 413, "payload_too_large")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_a_chunked_body_under_the_limit_is_stored_whole(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)
    pieces = [b"\x00first", b"", b"-second\xff-", b"x" * 1000]
    pieces = [p for p in pieces if p]  # an empty chunk would end the body
    value = b"".join(pieces)
    assert len(value) <= 1024

    r = chunked_post(client, path_of(topic, key="c"), pieces,
                     headers={"Content-Type": "application/x-test"})

    answer = delivered(r, topic)
    [rec] = kafka.read_topic(topic)
    assert (rec.offset, rec.key, rec.value) == (answer["offset"], b"c", value)
    assert rec.header("content-type") == b"application/x-test"


def test_a_chunked_batch_over_the_limit_is_413(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)
    body = json.dumps({"records": [{"value": "v" * 600}, {"value": "w" * 600}]}).encode()

    r = chunked_post(client, path_of(topic, batch=True), [body[:700], body[700:]],
                     headers={"Content-Type": "application/json"})

    assert_error(r, 413, "payload_too_large")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_batch_over_max_batch_records_is_413(ackd, kafka, via):
    client = client_of(ackd(config=LIMITS), via)
    topic = new_topic(kafka)

    too_many = publish_batch(client, topic, [{"value": str(i)} for i in range(4)])
    over_bytes = post_over_limit(
        client, path_of(topic, batch=True),
        json.dumps({"records": [{"value": "x" * 600}, {"value": "y" * 600}]}).encode(),
        headers={"Content-Type": "application/json"})
    results = batch_results(publish_batch(client, topic,
                                          [{"value": str(i)} for i in range(3)]), 200)

    assert_error(too_many, 413, "payload_too_large")
    assert_error(over_bytes, 413, "payload_too_large")
    assert [r.value for r in kafka.read_topic(topic)] == [b"0", b"1", b"2"]
    assert [r.header("ackd-id").decode() for r in kafka.read_topic(topic)] == \
        [r["id"] for r in results]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/jsonl",
                                          "application/x-www-form-urlencoded",
                                          "application/octet-stream"])
def test_batch_without_application_json_is_415(ackd, kafka, via, content_type):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    body = json.dumps({"records": [{"value": "v"}]}).encode()
    headers = {"Content-Type": content_type} if content_type else {}

    r = client.post(path_of(topic, batch=True), body=body, headers=headers)

    assert_error(r, 415, "unsupported_media_type")
    assert_nothing_but_sentinel(kafka, client, topic)


def test_batch_accepts_application_json_with_parameters(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka)
    body = json.dumps({"records": [{"value": "v"}]}).encode()

    r = client.post(path_of(topic, batch=True), body=body,
                    headers={"Content-Type": "Application/JSON; charset=utf-8"})

    [result] = batch_results(r, 200)
    assert [rec.value for rec in kafka.read_topic(topic)] == [b"v"]
    assert_delivered(result, topic)


# --- many clients at once --------------------------------------------------------------

CONCURRENT = 2000
CONCURRENT_TIMEOUT = 90


async def _http_exchange(open_conn, request, opened, answered):
    reader, writer = await open_conn()
    try:
        writer.write(request)
        await writer.drain()
        opened.append(1)
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await reader.readexactly(length)
        answered.append(1)
        return status, body
    finally:
        writer.close()


def ackd_threads(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise ValueError("no Threads line")


def produce_in_flight(client):
    """ackd_produce_in_flight: records handed to Kafka and not yet acknowledged."""
    m = re.search(rb"^ackd_produce_in_flight (\d+)$", client.get("/metrics", timeout=5).body,
                  re.M)
    return int(m.group(1)) if m else -1


def test_many_concurrent_ack_kafka_requests_are_suspended_not_threads(ackd, kafka, via):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONCURRENT * 2 + 512  # this process's sockets, and ackd's (it inherits)
    assert hard >= need, f"RLIMIT_NOFILE hard limit {hard} is below {need}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        daemon = ackd(config={"publish": {"ack_timeout_ms": 120000}})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    client = client_of(daemon, via)
    topic = new_topic(kafka, partitions=4)
    delivered(publish(client, topic, b"warm-up"), topic)  # topic known, producer connected
    baseline_threads = ackd_threads(daemon.proc.pid)
    broker = kafka.nodes[0]

    if via == "tcp":
        def open_conn():
            return asyncio.open_connection("127.0.0.1", daemon.http_port)
    else:
        def open_conn():
            return asyncio.open_unix_connection(str(daemon.unix_path))

    def request(i):
        body = b"concurrent-%d" % i
        return (f"POST {path_of(topic, key=f'k{i % 97}')} HTTP/1.1\r\nHost: localhost\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

    opened, answered = [], []
    during, after = {}, {}

    async def run():
        tasks = [asyncio.ensure_future(_http_exchange(open_conn, request(i), opened, answered))
                 for i in range(CONCURRENT)]
        # Kafka is stopped: no ack can come, every request stays open in ackd.
        broker.signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while len(opened) < CONCURRENT and time.monotonic() < deadline:
                if any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            during["opened"] = len(opened)
            # Written is not read: wait until ackd holds every request (each
            # record spooled and waiting for Kafka), so that what follows is
            # measured with 2000 requests suspended, not still in socket buffers.
            loop = asyncio.get_running_loop()
            waiting = -1
            while waiting < CONCURRENT and time.monotonic() < deadline:
                if any(t.done() for t in tasks):
                    break
                waiting = await loop.run_in_executor(None, produce_in_flight, client)
                await asyncio.sleep(0.05)
            during["waiting_for_kafka"] = waiting
            during["held_after_s"] = round(time.monotonic() - (deadline - 30), 2)
            during["answered"] = len(answered)
            during["threads"] = ackd_threads(daemon.proc.pid)
            t0 = time.monotonic()
            health = await loop.run_in_executor(
                None, lambda: client.get("/healthz", timeout=5).status)
            during["health"] = (health, time.monotonic() - t0)
        finally:
            broker.signal(signal.SIGCONT)
        done, pending = await asyncio.wait(tasks, timeout=CONCURRENT_TIMEOUT)
        for t in pending:
            t.cancel()
        errors = {}
        for t in done:
            if t.exception() is not None:
                name = type(t.exception()).__name__
                errors[name] = errors.get(name, 0) + 1
        after["pending"] = len(pending)
        after["errors"] = errors
        return [t.result() if t in done and t.exception() is None else (None, b"")
                for t in tasks]

    started = time.monotonic()
    answers = asyncio.run(run())
    elapsed = time.monotonic() - started

    assert during["opened"] == CONCURRENT, during
    assert during["waiting_for_kafka"] == CONCURRENT, during
    assert during["answered"] == 0, during
    assert during["health"][0] == 200 and during["health"][1] < 2, during
    assert during["threads"] <= baseline_threads + 4, (baseline_threads, during)
    statuses = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    assert after == {"pending": 0, "errors": {}}, (after, statuses, during)
    assert elapsed < CONCURRENT_TIMEOUT, (elapsed, during)
    assert statuses == {200: CONCURRENT}, (statuses, during)
    docs = [json.loads(body) for _, body in answers]
    for doc in docs:
        assert_delivered(doc, topic)
    ids = {doc["id"] for doc in docs}
    assert len(ids) == CONCURRENT
    records = kafka.read_topic(topic)
    assert len(records) == CONCURRENT + 1
    by_id = {r.header("ackd-id").decode(): r for r in records}
    for i, doc in enumerate(docs):
        rec = by_id[doc["id"]]
        assert (rec.partition, rec.offset) == (doc["partition"], doc["offset"])
        assert rec.value == b"concurrent-%d" % i
        assert rec.key == f"k{i % 97}".encode()
        assert rec.partition == java_partition(rec.key, 4)
