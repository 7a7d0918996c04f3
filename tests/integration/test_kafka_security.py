"""ackd against a Kafka broker that requires SASL authentication.

ackd passes kafka.producer and kafka.consumer properties to librdkafka as they
are, so SASL needs no code of its own: these tests check that those lists reach
every Kafka handle ackd opens (the producer, the topics thread's metadata
handle, each subscription's consumer), that a wrong password leaves ackd up,
not ready and holding what it accepted in the spool, and that `ackd -n` checks
the properties.

The broker (tests/integration/kafka.py, sasl=) has a SASL_PLAINTEXT listener
for clients with the PLAIN mechanism; the test's own reads and writes go
through it as the admin user. SCRAM and TLS are in test_kafka_scram_tls.py.
"""

import time
import uuid

import pytest
from confluent_kafka import KafkaException

import ackd_proc
from kafka import KafkaCluster, wait_until

USERS = {"admin": "admin-secret", "ackd": "ackd-secret"}
MECHANISM = "PLAIN"
DELIVERY_TIMEOUT = 30


@pytest.fixture(scope="module")
def sasl_kafka():
    with KafkaCluster(brokers=1, sasl={"mechanism": MECHANISM, "users": USERS}) as cluster:
        yield cluster


def new_topic(kafka, partitions=1, prefix="sasl"):
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=partitions)
    return name


def start_ackd(ackd, kafka, password=None, subscriptions=None, config=None, wait=True):
    """ackd logging in to kafka as user ackd (with password, default the right
    one) for producing and consuming."""
    security = kafka.sasl_properties("ackd", password)
    cfg = {"kafka": {"producer": security,
                     "consumer": security + ["session.timeout.ms=6000",
                                             "heartbeat.interval.ms=500"]}}
    for key, value in (config or {}).items():
        cfg[key] = value
    return ackd(config=cfg, subscriptions=subscriptions, brokers=kafka.bootstrap, wait=wait)


def subscription(topic, sink, **extra):
    return {"name": "sasl", "topics": [topic], "group": f"grp-{topic}",
            "url": sink.url("/hook"), "timeout_ms": 5000,
            "retry": {"initial_ms": 200, "max_ms": 1000, "max_attempts": 3,
                      "max_retry_after_ms": 5000},
            **extra}


def status(daemon):
    r = daemon.http.get("/v1/status")
    assert r.status == 200, r.body
    return r.json()


def wait_committed(kafka, group, topic, expected, timeout=DELIVERY_TIMEOUT):
    """Until the group's committed offsets (read through SASL) equal expected."""
    seen = {}

    def done():
        try:
            seen.update(kafka.committed(group, topic))
        except KafkaException:  # the group coordinator is still loading
            return False
        return all(seen.get(p) == o for p, o in expected.items())

    try:
        wait_until(done, timeout, f"committed offsets {expected}", interval=0.3)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last seen {seen}") from None


# --- the harness -------------------------------------------------------------

def test_the_cluster_refuses_a_wrong_password_and_a_client_without_sasl(sasl_kafka):
    """The listener ackd is pointed at really authenticates: what passes
    below passes because of the credentials."""
    from confluent_kafka.admin import AdminClient

    good = AdminClient(sasl_kafka.client_config(**sasl_kafka.security_config("ackd")))
    assert good.list_topics(timeout=10).brokers
    for config in (sasl_kafka.security_config("ackd", "wrong-secret"), {}):
        client = AdminClient({"bootstrap.servers": sasl_kafka.bootstrap, **config,
                              "log_level": 0})
        with pytest.raises(KafkaException):
            client.list_topics(timeout=3)


# --- publishing --------------------------------------------------------------

def test_publish_single_and_batch_through_sasl(ackd, sasl_kafka):
    topic = new_topic(sasl_kafka, partitions=2)
    daemon = start_ackd(ackd, sasl_kafka)

    r = daemon.http.post(f"/v1/topics/{topic}?key=k1", body=b"single")
    assert r.status == 200, r.body
    single = r.json()
    assert single["status"] == "delivered" and single["topic"] == topic

    batch = {"records": [{"key": "k2", "value": "first"},
                         {"value": {"n": 2}, "headers": {"h": "v"}},
                         {"value_b64": "AAEC", "partition": 1}]}
    r = daemon.http.post(f"/v1/topics/{topic}/records", body=batch)
    assert r.status == 200, r.body
    results = r.json()["results"]
    assert [x["status"] for x in results] == ["delivered"] * 3
    assert results[2]["partition"] == 1

    stored = {(rec.partition, rec.offset): rec for rec in sasl_kafka.read_topic(topic)}
    assert len(stored) == 4
    expect = [(single, b"k1", b"single"), (results[0], b"k2", b"first"),
              (results[1], None, b'{"n":2}'), (results[2], None, b"\x00\x01\x02")]
    for answer, key, value in expect:
        rec = stored[(answer["partition"], answer["offset"])]
        assert (rec.key, rec.value) == (key, value)
        assert rec.header("ackd-id").decode() == answer["id"]
    assert stored[(results[1]["partition"], results[1]["offset"])].header("h") == b"v"

    # Kafka answered the topics thread's metadata requests through SASL too.
    wait_until(lambda: daemon.http.get("/readyz").status == 200, 10, "/readyz 200")
    assert status(daemon)["kafka"]["reachable"] is True


# --- consuming ---------------------------------------------------------------

def test_a_subscription_consumes_through_sasl(ackd, sasl_kafka, webhook_sink):
    sink = webhook_sink
    topic = new_topic(sasl_kafka, partitions=2)
    dlq = new_topic(sasl_kafka, prefix="sasl-dlq")
    for i in range(4):
        sasl_kafka.produce(topic, f"direct-{i}".encode(), key=f"k{i}".encode())
    # The first request is refused as poison: its dead-letter copy goes out
    # through ackd's producer, logged in like the rest.
    sink.script("/hook", 422)
    daemon = start_ackd(ackd, sasl_kafka,
                        subscriptions=[subscription(topic, sink, dead_letter_topic=dlq)])

    r = daemon.http.post(f"/v1/topics/{topic}?key=k9", body=b"through-ackd")
    assert r.status == 200, r.body
    published = r.json()

    got = sink.wait_for(5, timeout=DELIVERY_TIMEOUT, path="/hook")
    assert sorted(req.body for req in got) == [b"direct-0", b"direct-1", b"direct-2",
                                                b"direct-3", b"through-ackd"]
    ours = [req for req in got if req.body == b"through-ackd"]
    assert ours[0].header("webhook-id") == published["id"]
    assert ours[0].header("ackd-topic") == topic

    [refused] = [req for req in got if req.status == 422]
    wait_until(lambda: sasl_kafka.read_topic(dlq), DELIVERY_TIMEOUT, "the dead letter")
    [dead] = sasl_kafka.read_topic(dlq)
    assert dead.value == refused.body
    assert dead.header("ackd-dlq-source-topic") == topic.encode()

    ends = {}
    for rec in sasl_kafka.read_topic(topic):
        ends[rec.partition] = rec.offset + 1
    wait_committed(sasl_kafka, f"grp-{topic}", topic, ends)
    assert status(daemon)["subscriptions"][0]["assigned_partitions"] == 2


# --- a wrong password --------------------------------------------------------

def test_a_wrong_password_keeps_ackd_up_not_ready_and_spooling(ackd, sasl_kafka,
                                                               webhook_sink):
    sink = webhook_sink
    topic = new_topic(sasl_kafka)
    daemon = start_ackd(ackd, sasl_kafka, password="wrong-secret",
                        subscriptions=[subscription(topic, sink)])

    r = daemon.http.get("/readyz")
    assert r.status == 503, r.body
    assert r.header("Retry-After")
    reasons = r.json()["reasons"]
    assert any("kafka" in reason for reason in reasons), reasons

    ids = []
    for i in range(3):
        r = daemon.http.post(f"/v1/topics/{topic}?ack=spool", body=f"held-{i}".encode())
        assert r.status == 202, r.body
        assert r.json()["status"] == "spooled"
        ids.append(r.json()["id"])
    r = daemon.http.post(f"/v1/topics/{topic}/records?ack=spool",
                         body={"records": [{"value": "held-batch"}]})
    assert r.status == 202, r.body
    ids.append(r.json()["results"][0]["id"])

    wait_until(lambda: "SASL authentication error" in daemon.stderr_text(), 15,
               "ackd to log the authentication failure")
    time.sleep(2)  # a few more login attempts: nothing gets through
    assert daemon.healthy()
    doc = status(daemon)
    assert doc["spool"]["records"] == 4, doc
    assert doc["kafka"]["reachable"] is False, doc
    assert daemon.http.get("/readyz").status == 503
    assert sasl_kafka.read_topic(topic) == []
    assert sink.received() == []
    assert "Authentication failed" in daemon.stderr_text()

    # The right password: what the spool held reaches Kafka and the webhook.
    for key in ("producer", "consumer"):
        props = daemon.settings["kafka"][key]
        daemon.settings["kafka"][key] = [p.replace("wrong-secret", USERS["ackd"]) for p in props]
    daemon.write_config()
    daemon.restart()

    got = sink.wait_for(4, timeout=DELIVERY_TIMEOUT, path="/hook")
    assert sorted(req.header("webhook-id") for req in got) == sorted(ids)
    stored = sasl_kafka.read_topic(topic)
    assert sorted(rec.header("ackd-id").decode() for rec in stored) == sorted(ids)
    wait_until(lambda: status(daemon)["spool"]["records"] == 0, 10, "the spool to drain")
    wait_until(lambda: daemon.http.get("/readyz").status == 200, 15, "/readyz 200")


# --- checking the configuration ----------------------------------------------

def check(tmp_path, lines):
    conf = tmp_path / "ackd.conf"
    conf.write_text("".join(line + "\n" for line in lines))
    return conf, ackd_proc.run("-n", "-c", conf)


def sasl_lines(tmp_path, mechanism_prop):
    return [
        'kafka = {',                                                   # 1
        '  brokers = "127.0.0.1:9092";',                               # 2
        '  producer = [ "security.protocol=SASL_PLAINTEXT",',          # 3
        '               "sasl.mechanisms=PLAIN",',                     # 4
        '               "sasl.username=ackd", "sasl.password=ackd-secret" ];',  # 5
        '  consumer = [ "security.protocol=SASL_PLAINTEXT",',          # 6
        f'               "{mechanism_prop}",',                         # 7
        '               "sasl.username=ackd", "sasl.password=ackd-secret" ];',  # 8
        '};',                                                          # 9
        f'spool = {{ dir = "{tmp_path / "spool"}"; }};',               # 10
    ]


def test_check_accepts_the_sasl_properties(tmp_path):
    conf, res = check(tmp_path, sasl_lines(tmp_path, "sasl.mechanisms=PLAIN"))
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout + res.stderr


def test_check_rejects_an_unknown_property_with_librdkafkas_words_and_the_line(tmp_path):
    conf, res = check(tmp_path, sasl_lines(tmp_path, "sasl.mechanismz=PLAIN"))
    assert res.returncode == 1
    # The name, never a sasl.* value (it may be a password).
    want = (f'{conf}:7: kafka.consumer: "sasl.mechanismz=(hidden)": '
            f'No such configuration property: "sasl.mechanismz"')
    assert want in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith(f"{conf}:")]
    assert len(errors) == 1, res.stderr


def test_check_rejects_an_invalid_security_protocol(tmp_path):
    lines = sasl_lines(tmp_path, "sasl.mechanisms=PLAIN")
    lines[2] = '  producer = [ "security.protocol=SASL_PLAINTEX",'
    conf, res = check(tmp_path, lines)
    assert res.returncode == 1
    assert (f'{conf}:3: kafka.producer: "security.protocol=SASL_PLAINTEX": Invalid value '
            f'"SASL_PLAINTEX" for configuration property "security.protocol"') in res.stderr, \
        res.stderr


def test_an_unsupported_mechanism_stops_ackd_at_start_with_librdkafkas_words(tmp_path):
    """librdkafka checks the mechanism only when the client is created, so
    ackd refuses to start (and says why) rather than run without Kafka."""
    daemon = ackd_proc.Ackd(ackd_proc.find_ackd(), "127.0.0.1:9",
                            config={"kafka": {"producer": ["security.protocol=SASL_PLAINTEXT",
                                                           "sasl.mechanisms=PLAINN"]}})
    try:
        daemon.start(wait=False)
        assert daemon.wait_exit(timeout=10) != 0
        assert "Unsupported SASL mechanism: (hidden)" in daemon.stderr_text()
        assert "PLAINN" not in daemon.stderr_text()
    finally:
        daemon.close()
