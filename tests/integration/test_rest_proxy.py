"""Kafka REST Proxy compatibility (docs/http-api.md, "From REST Proxy to
ackd") and W3C trace context on the publish side, against a real Kafka
broker, on both listeners.

The request bodies are the Confluent REST Proxy documentation's own examples,
byte for byte: the v2 "Example binary request" and "Example JSON request" of
POST /topics/(string:topic_name) (API reference, docs/api.rst of
confluentinc/kafka-rest), and the v3 examples of produceRecord
(api/v3/openapi.yaml of confluentinc/kafka-rest). Each answer is compared
field by field with the documented example answer: the same fields, of the
same types, with the same values wherever they do not depend on the broker
(offsets do; partitions do unless the request named one). What Kafka holds is
then read back and compared with the request.

Every error answer is checked for its status, the REST Proxy error shape
{"error_code":…,"message":…} and its code; a refused request leaves nothing
in Kafka.
"""

import base64
import json
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka import wait_until
from test_publish_api import (bearer, client_of, delivered, java_partition, new_topic,  # noqa: F401
                              post_over_limit, publish, publish_batch, unique_topic,
                              via)  # via: the fixture

ARRIVAL_TIMEOUT = 30
V2_TYPE = "application/vnd.kafka.v2+json"

# --- the documentation's examples, as written there --------------------------

# docs/api.rst, POST /topics/(string:topic_name), "Example binary request".
V2_BINARY_REQUEST = b"""{
  "records": [
    {
      "key": "a2V5",
      "value": "Y29uZmx1ZW50"
    },
    {
      "value": "a2Fma2E=",
      "partition": 1
    },
    {
      "value": "bG9ncw=="
    }
  ]
}"""
# ... and its "Example binary response" (the same offsets as the JSON one).
V2_RESPONSE = {
    "key_schema_id": None,
    "value_schema_id": None,
    "offsets": [
        {"partition": 2, "offset": 100},
        {"partition": 1, "offset": 101},
        {"partition": 2, "offset": 102},
    ],
}

# "Example JSON request".
V2_JSON_REQUEST = b"""{
  "records": [
    {
      "key": "somekey",
      "value": {"foo": "bar"}
    },
    {
      "value": [ "foo", "bar" ],
      "partition": 1
    },
    {
      "value": 53.5
    }
  ]
}"""

# "Example Avro request" (the documentation's text, missing comma included:
# the 415 comes from the Content-Type, before the body is read as JSON).
V2_AVRO_REQUEST = b"""{
  "value_schema": "{\\"name\\":\\"int\\",\\"type\\": \\"int\\"}"
  "records": [
    {
      "value": 12
    },
    {
      "value": 24,
      "partition": 1
    }
  ]
}"""

# api/v3/openapi.yaml, requestBodies.ProduceRequest.examples.binary_and_json.
V3_BINARY_AND_JSON = {
    "partition_id": 1,
    "headers": [
        {"name": "Header-1", "value": "SGVhZGVyLTE="},
        {"name": "Header-2", "value": "SGVhZGVyLTI="},
    ],
    "key": {"type": "BINARY", "data": "Zm9vYmFy"},
    "value": {"type": "JSON", "data": {"foo": "bar"}},
    "timestamp": "2021-02-05T19:14:42Z",
}
# ... examples.string
V3_STRING = {"value": {"type": "STRING", "data": "My message"}}
# ... examples.binary_and_avro_with_subject_and_raw_schema
V3_AVRO = {
    "partition_id": 1,
    "headers": [
        {"name": "Header-1", "value": "SGVhZGVyLTE="},
        {"name": "Header-2", "value": "SGVhZGVyLTI="},
    ],
    "key": {"type": "BINARY", "data": "Zm9vYmFy"},
    "value": {"type": "AVRO", "subject": "topic-1-key", "schema": "{\"type\":\"string\"}",
              "data": "foobar"},
    "timestamp": "2021-02-05T19:14:42Z",
}
# ... examples.schema_id_and_schema_version
V3_SCHEMA_ID = {"key": {"subject_name_strategy": "TOPIC_NAME", "schema_id": 1, "data": 1000},
                "value": {"schema_version": 1, "data": {"foo": "bar"}}}
# responses.ProduceResponse.examples.produce_record_success. Its key and
# value sizes (7, 15) are not those of the request example's bytes (6, 13):
# sizes are checked against what Kafka holds.
V3_RESPONSE = {
    "error_code": 200,
    "cluster_id": "cluster-1",
    "topic_name": "topic-1",
    "partition_id": 1,
    "offset": 0,
    "timestamp": "2021-02-05T19:14:42Z",
    "key": {"type": "BINARY", "size": 7},
    "value": {"type": "JSON", "size": 15},
}

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

# --- helpers -------------------------------------------------------------------


def post_v2(client, topic, body, fmt="binary", headers=None, query=""):
    hdrs = {"Content-Type": f"application/vnd.kafka.{fmt}.v2+json",
            "Accept": "application/vnd.kafka.v2+json, application/vnd.kafka+json, "
                      "application/json", **(headers or {})}
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.post(f"/topics/{topic}{query}", body=body, headers=hdrs)


def post_v3(client, topic, body, cluster="cluster-1", headers=None, query=""):
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.post(f"/v3/clusters/{cluster}/topics/{topic}/records{query}", body=body,
                       headers=hdrs)


def same_shape(got, documented, path="answer"):
    """got has exactly the documented fields, each of the documented JSON type
    (null where the documentation has null); recursively for objects."""
    assert isinstance(got, dict), (path, got)
    assert set(got) == set(documented), (path, sorted(got), sorted(documented))
    for name, want in documented.items():
        have = got[name]
        if want is None:
            assert have is None, (f"{path}.{name}", have)
        elif isinstance(want, dict):
            same_shape(have, want, f"{path}.{name}")
        elif isinstance(want, list):
            assert isinstance(have, list), (f"{path}.{name}", have)
        else:
            assert type(have) is type(want), (f"{path}.{name}", have, want)


def assert_rp_error(r, status, error_code, v2):
    """A REST Proxy error: exactly {"error_code","message"}; returns the message."""
    assert r.status == status, (r.status, r.body)
    want_type = V2_TYPE if v2 else "application/json"
    assert (r.header("content-type") or "").startswith(want_type), r.headers
    doc = r.json()
    assert set(doc) == {"error_code", "message"}, doc
    assert doc["error_code"] == error_code, doc
    assert isinstance(doc["message"], str) and doc["message"], doc
    return doc["message"]


def v2_offsets(r, status=200):
    """The documented v2 answer, checked field by field; returns its offsets."""
    assert r.status == status, (r.status, r.body)
    assert (r.header("content-type") or "").startswith(V2_TYPE), r.headers
    doc = r.json()
    same_shape(doc, V2_RESPONSE)
    for entry in doc["offsets"]:
        # the documented entry's fields, and REST Proxy's error fields (null)
        assert set(entry) == {"partition", "offset", "error_code", "error"}, entry
        assert entry["error_code"] is None and entry["error"] is None, entry
    return doc["offsets"]


LEADER_NOT_KNOWN = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.UNKNOWN_TOPIC_OR_PART)


def wait_records(kafka, topic, count):
    found = []

    def enough():
        try:
            found[:] = kafka.read_topic(topic)
        except KafkaException as e:  # a topic this new: its leader not known yet
            err = e.args[0] if e.args else None
            if not (isinstance(err, KafkaError) and err.code() in LEADER_NOT_KNOWN):
                raise
            return False
        return len(found) >= count

    wait_until(enough, ARRIVAL_TIMEOUT, f"{count} record(s) in {topic}", interval=0.1)
    return list(found)


def at(records, partition, offset):
    [rec] = [r for r in records if r.partition == partition and r.offset == offset]
    return rec


def assert_nothing_but_sentinel(kafka, client, topic):
    answer = delivered(publish(client, topic, b"sentinel", partition=0), topic)
    assert [(r.offset, r.value) for r in kafka.read_topic(topic)] == \
        [(answer["offset"], b"sentinel")]


# --- v2 ---------------------------------------------------------------------------


def test_v2_documented_binary_example(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3, prefix="rp2")

    offsets = v2_offsets(post_v2(client, topic, V2_BINARY_REQUEST))

    assert len(offsets) == len(V2_RESPONSE["offsets"])
    # a keyed record goes where the Java client would put it; partition 1 was asked for
    assert offsets[0]["partition"] == java_partition(b"key", 3)
    assert offsets[1]["partition"] == V2_RESPONSE["offsets"][1]["partition"] == 1
    records = wait_records(kafka, topic, 3)
    sent = [(b"key", b"confluent"), (None, b"kafka"), (None, b"logs")]
    for entry, (key, value) in zip(offsets, sent):
        rec = at(records, entry["partition"], entry["offset"])
        assert (rec.key, rec.value) == (key, value)
        assert [k for k, _ in rec.headers] == ["ackd-id"]
    assert len(records) == 3


def test_v2_documented_json_example(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3, prefix="rp2")

    offsets = v2_offsets(post_v2(client, topic, V2_JSON_REQUEST, fmt="json"))

    assert len(offsets) == 3
    assert offsets[1]["partition"] == 1
    records = wait_records(kafka, topic, 3)
    # Keys and values are their compact JSON text, strings included (quoted):
    # what REST Proxy's JSON serializer writes and a JSON consumer parses.
    sent = [(b'"somekey"', b'{"foo":"bar"}'), (None, b'["foo","bar"]'), (None, b"53.5")]
    for entry, (key, value) in zip(offsets, sent):
        rec = at(records, entry["partition"], entry["offset"])
        assert (rec.key, rec.value) == (key, value)
    assert offsets[0]["partition"] == java_partition(b'"somekey"', 3)


@pytest.mark.parametrize("fmt", ["avro", "protobuf", "jsonschema"])
def test_v2_schema_registry_formats_are_415_naming_the_format(ackd, kafka, via, fmt):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp2")

    message = assert_rp_error(post_v2(client, topic, V2_AVRO_REQUEST, fmt=fmt), 415, 415,
                              v2=True)

    assert fmt in message and "schema registry" in message
    assert_nothing_but_sentinel(kafka, client, topic)


def test_v2_ack_spool_answers_202_with_null_offsets(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, partitions=3, prefix="rp2")

    r = post_v2(client, topic, V2_BINARY_REQUEST, query="?ack=spool")

    assert r.status == 202, (r.status, r.body)
    doc = r.json()
    same_shape(doc, V2_RESPONSE)
    assert doc["offsets"] == [{"partition": None, "offset": None, "error_code": None,
                               "error": None}] * 3
    records = wait_records(kafka, topic, 3)
    assert sorted(r.value for r in records) == [b"confluent", b"kafka", b"logs"]


@pytest.mark.parametrize("ctype", ["application/json", "text/plain",
                                   "application/vnd.kafka.v2+json",
                                   "application/vnd.kafka.binary.v1+json", None])
def test_v2_other_content_types_are_415(ackd, kafka, via, ctype):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp2")
    headers = {"Content-Type": ctype} if ctype else {}

    r = client.post(f"/topics/{topic}", body=V2_BINARY_REQUEST, headers=headers)

    message = assert_rp_error(r, 415, 415, v2=True)
    assert "application/vnd.kafka.binary.v2+json" in message
    assert_nothing_but_sentinel(kafka, client, topic)


@pytest.mark.parametrize("records, names", [
    ([{"value": "not base64!"}], "records[0].value"),
    ([{"value": "Y29uZmx1ZW50"}, {"key": "a2V", "value": "a2Fma2E="}], "records[1].key"),
    ([{"value": "Y29uZmx1ZW50", "partition": -1}], "records[0].partition"),
    ([{"value": None}], "records[0].value"),
    ([{"value": "Y29uZmx1ZW50", "offset": 1}], "offset"),
    ([], "records"),
])
def test_v2_bad_records_are_400_naming_the_record(ackd, kafka, via, records, names):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp2")

    message = assert_rp_error(post_v2(client, topic, {"records": records}), 400, 400, v2=True)

    assert names in message, message
    assert_nothing_but_sentinel(kafka, client, topic)


def test_v2_unknown_topic_is_40401(ackd, via):
    client = client_of(ackd(), via)

    message = assert_rp_error(post_v2(client, unique_topic("rp2-missing"), V2_BINARY_REQUEST),
                              404, 40401, v2=True)
    assert "does not exist" in message


def test_v2_and_v3_over_the_body_and_record_limits_are_413(ackd, kafka, via):
    client = client_of(ackd(config={"limits": {"max_body_bytes": 4096,
                                               "max_batch_records": 2}}), via)
    topic = new_topic(kafka, prefix="rp2")
    big = base64.b64encode(b"x" * 4096).decode()

    v2_big = post_over_limit(client, f"/topics/{topic}",
                             json.dumps({"records": [{"value": big}]}).encode(),
                             headers={"Content-Type": "application/vnd.kafka.binary.v2+json"})
    v3_big = post_over_limit(client, f"/v3/clusters/c/topics/{topic}/records",
                             json.dumps({"value": {"type": "BINARY", "data": big}}).encode(),
                             headers={"Content-Type": "application/json"})

    assert "max_body_bytes" in assert_rp_error(v2_big, 413, 413, v2=True)
    assert "max_body_bytes" in assert_rp_error(v3_big, 413, 413, v2=False)
    message = assert_rp_error(post_v2(client, topic, V2_BINARY_REQUEST), 413, 413, v2=True)
    assert "3 records" in message  # over max_batch_records
    assert_nothing_but_sentinel(kafka, client, topic)


TOKENS = {"auth": {"tokens": [{"token": "tok-alpha-0123456789", "topics": ["alpha-*"]}]}}


def test_v2_and_v3_tokens_401_and_403(ackd, kafka, via):
    client = client_of(ackd(config=TOKENS), via)
    alpha = new_topic(kafka, prefix="alpha")
    beta = new_topic(kafka, prefix="beta")
    good = bearer("tok-alpha-0123456789")

    for headers in ({}, bearer("wrong")):
        r = post_v2(client, alpha, V2_BINARY_REQUEST, headers=headers)
        assert_rp_error(r, 401, 401, v2=True)
        assert r.header("www-authenticate") == "Bearer"
        assert_rp_error(post_v3(client, alpha, V3_STRING, headers=headers), 401, 401, v2=False)
    assert_rp_error(post_v2(client, beta, V2_BINARY_REQUEST, headers=good), 403, 403, v2=True)
    assert_rp_error(post_v3(client, beta, V3_STRING, headers=good), 403, 403, v2=False)
    assert kafka.read_topic(alpha) == [] and kafka.read_topic(beta) == []

    v2_offsets(post_v2(client, alpha, {"records": [{"value": "YQ=="}]}, headers=good))
    assert post_v3(client, alpha, V3_STRING, headers=good).status == 200
    assert sorted(r.value for r in wait_records(kafka, alpha, 2)) == [b"My message", b"a"]


# --- v3 ---------------------------------------------------------------------------


def test_v3_documented_binary_and_json_example(ackd, kafka, via):
    client = client_of(ackd(), via)
    # The example's timestamp is from 2021: keep the broker from deleting it as old.
    topic = unique_topic("rp3")
    kafka.create_topic(topic, partitions=2, configs={"retention.ms": -1})

    r = post_v3(client, topic, V3_BINARY_AND_JSON)

    assert r.status == 200, (r.status, r.body)
    assert (r.header("content-type") or "").startswith("application/json")
    doc = r.json()
    same_shape(doc, V3_RESPONSE)
    for name in ("error_code", "cluster_id", "partition_id", "timestamp"):
        assert doc[name] == V3_RESPONSE[name], name
    assert doc["topic_name"] == topic
    assert doc["key"]["type"] == V3_RESPONSE["key"]["type"]
    assert doc["value"]["type"] == V3_RESPONSE["value"]["type"]

    rec = at(wait_records(kafka, topic, 1), doc["partition_id"], doc["offset"])
    assert rec.key == b"foobar" and doc["key"]["size"] == len(rec.key)
    assert rec.value == b'{"foo":"bar"}' and doc["value"]["size"] == len(rec.value)
    assert rec.header("Header-1") == b"Header-1"
    assert rec.header("Header-2") == b"Header-2"
    assert [k for k, _ in rec.headers] == ["Header-1", "Header-2", "ackd-id"]
    assert rec.timestamp == 1612552482000  # 2021-02-05T19:14:42Z


def test_v3_documented_string_example_and_any_cluster_id(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp3")

    r = post_v3(client, topic, V3_STRING, cluster="lkc-anything_1")

    assert r.status == 200, (r.status, r.body)
    doc = r.json()
    documented = dict(V3_RESPONSE, key=None, value={"type": "STRING", "size": 0})
    same_shape(doc, documented)
    assert doc["cluster_id"] == "lkc-anything_1" and doc["key"] is None
    assert doc["value"] == {"type": "STRING", "size": len(b"My message")}
    rec = at(wait_records(kafka, topic, 1), doc["partition_id"], doc["offset"])
    assert (rec.key, rec.value) == (None, b"My message")
    # without a timestamp in the request, the record's is when ackd took it
    assert doc["timestamp"].endswith("Z") and rec.timestamp > 1612552482000


def test_v3_ack_spool_answers_202(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp3")

    r = post_v3(client, topic, V3_STRING, query="?ack=spool")

    assert r.status == 202, (r.status, r.body)
    doc = r.json()
    assert doc["error_code"] == 202
    assert doc["partition_id"] is None and doc["offset"] is None
    assert doc["value"] == {"type": "STRING", "size": 10}
    assert [r.value for r in wait_records(kafka, topic, 1)] == [b"My message"]


@pytest.mark.parametrize("body, fmt", [(V3_AVRO, "AVRO"), (V3_SCHEMA_ID, "schema"),
                                       ({"value": {"type": "PROTOBUF", "data": "x"}},
                                        "PROTOBUF")])
def test_v3_schema_registry_formats_are_415(ackd, kafka, via, body, fmt):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp3")

    message = assert_rp_error(post_v3(client, topic, body), 415, 415, v2=False)

    assert fmt in message and "schema registry" in message
    assert_nothing_but_sentinel(kafka, client, topic)


@pytest.mark.parametrize("body, names", [
    # responses.ProduceResponse.examples.produce_record_bad_binary_data: data=1
    ({"value": {"type": "BINARY", "data": 1}}, "value.data"),
    ({"value": {"type": "BINARY", "data": "Zm9vYmF"}}, "value.data"),
    ({"key": {"type": "BINARY", "data": "!"}, "value": {"type": "STRING", "data": "v"}},
     "key.data"),
    ({"value": {"type": "STRING", "data": "v"}, "headers": [{"name": "h", "value": "%"}]},
     "headers[0].value"),
    ({"value": {"type": "STRING", "data": "v"},
      "headers": [{"name": "h", "value": "YQ=="}, {"name": "h", "value": "Yg=="}]}, "twice"),
    ({"value": {"type": "STRING", "data": "v"}, "timestamp": "yesterday"}, "timestamp"),
    ({"value": {"type": "STRING", "data": "v"}, "partition_id": "1"}, "partition_id"),
    ({"key": {"type": "STRING", "data": "k"}}, "value"),
    ({"value": {"type": "TEXT", "data": "v"}}, "value.type"),
])
def test_v3_bad_records_are_400(ackd, kafka, via, body, names):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp3")

    message = assert_rp_error(post_v3(client, topic, body), 400, 400, v2=False)

    assert names in message, message
    assert_nothing_but_sentinel(kafka, client, topic)


def test_v3_wrong_content_type_unknown_topic_and_paths(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="rp3")

    r = client.post(f"/v3/clusters/c/topics/{topic}/records", body=json.dumps(V3_STRING).encode(),
                    headers={"Content-Type": "text/plain"})
    assert_rp_error(r, 415, 415, v2=False)
    assert_rp_error(post_v3(client, unique_topic("rp3-missing"), V3_STRING), 404, 404, v2=False)
    for path in (f"/v3/clusters/c/topics/{topic}", f"/v3/clusters//topics/{topic}/records",
                 f"/v3/clusters/c/topics/{topic}/records:batch", f"/topics/{topic}/partitions/0"):
        r = client.post(path, body=b"{}", headers={"Content-Type": "application/json"})
        assert_rp_error(r, 404, 404, v2=path.startswith("/topics/"))
    r = client.get(f"/v3/clusters/c/topics/{topic}/records")
    assert_rp_error(r, 405, 405, v2=False)
    assert r.header("allow") == "POST"
    assert_nothing_but_sentinel(kafka, client, topic)


# --- trace context ---------------------------------------------------------------


def trace_headers(record):
    return {k: v for k, v in record.headers if k in ("traceparent", "tracestate")}


def test_trace_context_becomes_kafka_headers_on_every_api(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="trace")
    trace = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}

    single = delivered(publish(client, topic, b"single", headers=trace), topic)
    batch = publish_batch(client, topic, [{"value": "b1"}, {"value": "b2"}], headers=trace)
    assert batch.status == 200, batch.body
    v2 = v2_offsets(post_v2(client, topic, {"records": [{"value": "djI="}]}, headers=trace))
    v3 = post_v3(client, topic, {"value": {"type": "STRING", "data": "v3"}}, headers=trace)
    assert v3.status == 200, v3.body

    records = wait_records(kafka, topic, 5)
    assert sorted(r.value for r in records) == [b"b1", b"b2", b"single", b"v2", b"v3"]
    want = {"traceparent": TRACEPARENT.encode(), "tracestate": TRACESTATE.encode()}
    for rec in records:
        assert trace_headers(rec) == want, rec
    assert at(records, 0, single["offset"]).value == b"single"
    assert at(records, 0, v2[0]["offset"]).value == b"v2"


@pytest.mark.parametrize("traceparent", [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper-case hex
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # trace-id all zero
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # parent-id all zero
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 is 55 chars
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace-id
    "garbage",
])
def test_an_invalid_traceparent_is_not_stored_and_the_message_is(ackd, kafka, via,
                                                                 traceparent):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="trace")
    headers = {"traceparent": traceparent, "tracestate": TRACESTATE}

    answer = delivered(publish(client, topic, b"v", headers=headers), topic)

    [rec] = wait_records(kafka, topic, 1)
    assert rec.offset == answer["offset"] and rec.value == b"v"
    assert trace_headers(rec) == {}


def test_trace_context_edge_cases(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = new_topic(kafka, prefix="trace")
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc"

    cases = [
        # a later version may carry more fields: kept as sent
        (b"later", {"traceparent": later}, {"traceparent": later.encode()}),
        # a malformed tracestate is dropped, the traceparent kept
        (b"bad state", {"traceparent": TRACEPARENT, "tracestate": "no-equals-sign"},
         {"traceparent": TRACEPARENT.encode()}),
        (b"long state", {"traceparent": TRACEPARENT, "tracestate": "k=" + "v" * 600},
         {"traceparent": TRACEPARENT.encode()}),
        # tracestate without traceparent: nothing
        (b"state only", {"tracestate": TRACESTATE}, {}),
        # the message's own traceparent (Kafka-Header-) wins over the request's
        (b"own", {"traceparent": TRACEPARENT, "Kafka-Header-traceparent": later},
         {"traceparent": later.encode(), "tracestate": None}),
    ]
    for value, headers, _ in cases:
        delivered(publish(client, topic, value, headers=headers, partition=0), topic)
    records = {r.value: r for r in wait_records(kafka, topic, len(cases))}
    for value, _, want in cases:
        got = trace_headers(records[value])
        assert got == {k: v for k, v in want.items() if v is not None}, (value, got)

    # a batch record's own traceparent header wins too
    r = publish_batch(client, topic, [{"value": "own-b", "headers": {"traceparent": later}},
                                      {"value": "req-b"}],
                      headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    assert r.status == 200, r.body
    records = {r.value: r for r in wait_records(kafka, topic, len(cases) + 2)}
    assert trace_headers(records[b"own-b"]) == {"traceparent": later.encode()}
    assert trace_headers(records[b"req-b"]) == {"traceparent": TRACEPARENT.encode(),
                                                "tracestate": TRACESTATE.encode()}


def test_records_kafka_rejects_for_good_get_rest_proxy_errors(ackd, kafka, via):
    client = client_of(ackd(), via)
    topic = unique_topic("rp-reject")
    kafka.create_topic(topic, configs={"max.message.bytes": 1024})
    big = base64.b64encode(b"x" * 4096).decode()

    # v2: the big record's entry carries REST Proxy's Kafka error, the others
    # are delivered; the status stays 200, as with REST Proxy.
    r = post_v2(client, topic, {"records": [{"value": "c21hbGwtMA==", "partition": 0},
                                            {"value": big, "partition": 0},
                                            {"value": "c21hbGwtMg==", "partition": 0}]})
    assert r.status == 200, (r.status, r.body)
    doc = r.json()
    same_shape(doc, V2_RESPONSE)
    first, failed, last = doc["offsets"]
    assert failed["partition"] is None and failed["offset"] is None, failed
    assert failed["error_code"] == 50002, failed
    assert "Message size too large" in failed["error"], failed
    for entry in (first, last):
        assert entry["error_code"] is None and isinstance(entry["offset"], int), entry

    # v3: the error a native single publish gets, in the v3 shape.
    r = post_v3(client, topic, {"value": {"type": "BINARY", "data": big}})
    message = assert_rp_error(r, 413, 413, v2=False)
    assert "Message size too large" in message and "failed/" in message

    # (in either order: Kafka refused the record batch the three shared, and
    # the two small ones were produced again)
    records = wait_records(kafka, topic, 2)
    assert sorted(r.value for r in records) == [b"small-0", b"small-2"]
    assert {(r.partition, r.offset) for r in records} == \
        {(e["partition"], e["offset"]) for e in (first, last)}
