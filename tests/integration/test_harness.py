"""The test harness itself, proven without ackd: Kafka, the mock cluster, the
webhook sink, the HTTP client and the config writer."""

import re
import threading
import uuid

import pytest
from confluent_kafka import KafkaException

from ackd_proc import render_libconfig
from kafka import REPO, KafkaCluster, kafka_libs, kafka_version
from httpclient import HttpClient
from mock import MockError
from webhook_sink import Reply, webhook_signature


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_kafka_round_trip(kafka):
    topic = unique("harness")
    kafka.create_topic(topic, partitions=3, rf=1)

    kafka.produce(topic, b"v1", key=b"k1", headers=[("h", b"x")], partition=1)
    kafka.produce(topic, b"v2", partition=2)

    records = kafka.read_topic(topic)
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (1, 0, b"k1", b"v1"),
        (2, 0, None, b"v2"),
    ]
    assert records[0].header("h") == b"x"
    assert records[0].headers == [("h", b"x")]


def pom_property(name):
    pom = (REPO / "tests" / "kafka" / "pom.xml").read_text()
    m = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom)
    assert m, f"no {name} in tests/kafka/pom.xml"
    return m.group(1)


def test_broker_matrix_compat_broker_is_the_pinned_kafka_3(monkeypatch):
    """ACKD_KAFKA_BROKER=compat (the second run of scripts/test) gets the
    kafka.compat.version jars, a 3.x broker that really starts as that version
    and takes a round trip; without it, kafka.version, a 4.x one."""
    compat, main = pom_property("kafka.compat.version"), pom_property("kafka.version")
    assert compat.startswith("3.") and main.startswith("4."), (compat, main)
    monkeypatch.delenv("ACKD_KAFKA_LIBS", raising=False)
    monkeypatch.delenv("ACKD_KAFKA_BROKER", raising=False)
    assert kafka_version(kafka_libs()) == main
    monkeypatch.setenv("ACKD_KAFKA_BROKER", "compat")
    libs = kafka_libs()
    assert kafka_version(libs) == compat

    with KafkaCluster(brokers=1, libs=libs) as cluster:
        assert cluster.nodes[0].started_version() == compat
        topic = unique("compat")
        cluster.create_topic(topic, partitions=2, rf=1)
        cluster.produce(topic, b"v", key=b"k", partition=1)
        assert [(r.partition, r.key, r.value) for r in cluster.read_topic(topic)] == [
            (1, b"k", b"v")]

    monkeypatch.setenv("ACKD_KAFKA_BROKER", "2.8")
    with pytest.raises(ValueError, match="ACKD_KAFKA_BROKER"):
        kafka_libs()


def test_kafka_refuses_unknown_topics(kafka):
    with pytest.raises(KafkaException):
        kafka.produce(unique("absent"), b"v", timeout=3)


def test_kafka3_survives_one_broker_killed(kafka3):
    topic = unique("harness3")
    kafka3.create_topic(topic, partitions=1, rf=3)
    kafka3.produce(topic, b"before")

    kafka3.kill_broker(2)
    kafka3.produce(topic, b"during")  # acks=all with 2 of 3 in sync
    kafka3.start_broker(2)
    kafka3.produce(topic, b"after")

    assert [r.value for r in kafka3.read_topic(topic)] == [b"before", b"during", b"after"]


def test_mock_cluster_round_trip_and_faults(mock_kafka):
    mock_kafka.create_topic("orders", partitions=2, rf=3)
    mock_kafka.produce("orders", b"a", key=b"k", partition=0)

    mock_kafka.broker_down(1)
    mock_kafka.broker_up(1)
    mock_kafka.push_errors("Produce", "NOT_ENOUGH_REPLICAS", "REQUEST_TIMED_OUT")
    mock_kafka.produce("orders", b"b", partition=0)  # retried past both errors

    records = mock_kafka.read_topic("orders")
    assert [(r.partition, r.key, r.value) for r in records] == [(0, b"k", b"a"), (0, None, b"b")]


def test_mock_rejects_bad_commands(mock_kafka):
    with pytest.raises(MockError, match="unknown error name NO_SUCH_ERROR"):
        mock_kafka.push_errors("Produce", "NO_SUCH_ERROR")
    with pytest.raises(MockError, match="unknown command"):
        mock_kafka.command("explode")
    mock_kafka.push_broker_errors(1, "Produce", "NOT_LEADER_FOR_PARTITION")
    mock_kafka.set_rtt(2, 50)
    mock_kafka.create_topic("t", 1, 3)
    mock_kafka.set_leader("t", 0, 3)


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_webhook_sink_scripts_answers_and_records(webhook_sink, via):
    client = (HttpClient(port=webhook_sink.port) if via == "tcp"
              else HttpClient(unix_path=webhook_sink.unix_path))
    webhook_sink.script("/hook", 503, Reply(429, {"Retry-After": "2"}, b"slow down"))

    answers = [client.post("/hook?x=1", b"body", headers={"Webhook-Id": "m1"})
               for _ in range(3)]

    assert [a.status for a in answers] == [503, 429, 200]
    assert answers[1].header("retry-after") == "2"
    assert answers[1].body == b"slow down"
    got = webhook_sink.wait_for(3, timeout=5, path="/hook")
    assert [(r.method, r.body, r.via, r.status) for r in got] == [("POST", b"body", via, 503),
                                                                  ("POST", b"body", via, 429),
                                                                  ("POST", b"body", via, 200)]
    assert got[0].header("webhook-id") == "m1"
    assert got[0].query == {"x": ["1"]}


def test_webhook_sink_wait_for_sees_concurrent_requests(webhook_sink):
    client = HttpClient(port=webhook_sink.port)
    threads = [threading.Thread(target=client.post, args=(f"/p{i}", b"x")) for i in range(5)]
    for t in threads:
        t.start()
    got = webhook_sink.wait_for(5, timeout=5)
    for t in threads:
        t.join(timeout=5)
    assert sorted(r.path for r in got) == [f"/p{i}" for i in range(5)]


def test_webhook_signature_matches_the_standard_webhooks_vector():
    assert webhook_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                             "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                             b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_libconfig_rendering():
    text = render_libconfig({
        "listen": {"http": "127.0.0.1:1", "unix": ""},
        "kafka": {"brokers": "b:9092", "producer": ["linger.ms=5"], "consumer": []},
        "spool": {"max_bytes": 2**33, "fsync": "always"},
        "subscriptions": [{"name": "s", "topics": ["a", "b"], "url": 'x"y\\z',
                           "retry": {"max_attempts": 3}}],
        "auth": {"tokens": []},
        "flag": True,
    })
    assert text == (
        'listen = {\n  http = "127.0.0.1:1";\n  unix = "";\n};\n'
        'kafka = {\n  brokers = "b:9092";\n  producer = [ "linger.ms=5" ];\n'
        '  consumer = [ ];\n};\n'
        'spool = {\n  max_bytes = 8589934592L;\n  fsync = "always";\n};\n'
        'subscriptions = (\n  {\n    name = "s";\n    topics = [ "a", "b" ];\n'
        '    url = "x\\"y\\\\z";\n    retry = {\n      max_attempts = 3;\n    };\n  }\n);\n'
        'auth = {\n  tokens = ( );\n};\n'
        'flag = true;\n')
