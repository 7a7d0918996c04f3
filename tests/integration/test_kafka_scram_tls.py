"""ackd against Kafka 4 with SASL/SCRAM and TLS.

One Apache Kafka broker (tests/integration/kafka.py) with three listeners for
clients: SASL_PLAINTEXT and SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512
only (users created with the broker's own tools: `kafka-storage format
--add-scram`, and `kafka-configs --alter` for the ones a test adds), and SSL
that requires a client certificate. The certificates are made here with
openssl: a CA, the broker's certificate (for 127.0.0.1), ackd's client
certificate, and a second CA the broker does not trust, with a client
certificate of its own.

Through each listener ackd publishes, consumes to a webhook and writes a dead
letter. A wrong password and an untrusted client certificate leave ackd up,
not ready, with a log line and a /readyz reason saying Kafka refused the
login; publishes are spooled without waiting for Kafka, and ackd recovers by
itself once the broker accepts it.
"""

import shutil
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kafka import KafkaCluster, Tls, wait_until

USERS = {"admin": "admin-secret", "ackd": "ackd-secret"}
MECHANISMS = ["SCRAM-SHA-512", "SCRAM-SHA-256"]
DELIVERY_TIMEOUT = 30
ACK_TIMEOUT_MS = 2000
# ack=spool while Kafka refuses the login: the login fails in about 0.4 s.
SPOOL_ANSWER_S = 2.0


# --- certificates ------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_ca(directory, name):
    """A self-signed CA: returns (cert, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
            "-days", "2", "-subj", f"/CN=ackd test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return cert, key


def issue(directory, ca, name, cn, server=False):
    """A certificate signed by ca = (cert, key), for 127.0.0.1 when server:
    returns (cert, key); the key is PKCS#8 and unencrypted."""
    cert, key, csr = (directory / f"{name}.pem", directory / f"{name}.key",
                      directory / f"{name}.csr")
    ext = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    ext.write_text(f"extendedKeyUsage={usage}\n" +
                   ("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server else ""))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/CN={cn}", cwd=directory)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext, cwd=directory)
    return cert, key


class Pki:
    def __init__(self, directory):
        self.dir = directory
        self.ca = make_ca(directory, "ca")
        self.rogue_ca = make_ca(directory, "rogue-ca")
        self.broker = issue(directory, self.ca, "broker", "localhost", server=True)
        self.client = issue(directory, self.ca, "ackd", "ackd")
        self.rogue_client = issue(directory, self.rogue_ca, "rogue-ackd", "ackd")
        # The broker's key store (key, then certificate) and trust store.
        self.keystore = directory / "broker-keystore.pem"
        self.keystore.write_text(self.broker[1].read_text() + self.broker[0].read_text())
        self.truststore = directory / "broker-truststore.pem"
        shutil.copyfile(self.ca[0], self.truststore)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_kafka(pki):
    sasl = {"mechanisms": MECHANISMS, "users": USERS}
    with KafkaCluster(brokers=1, sasl=sasl, tls=Tls(pki.keystore, pki.truststore)) as cluster:
        yield cluster


# --- ackd --------------------------------------------------------------------

def security(kafka, pki, listener, mechanism="SCRAM-SHA-512", user="ackd", password=None,
             client=None):
    """(bootstrap, ackd's librdkafka properties) for listener."""
    if listener == "SSL":
        cert, key = client or pki.client
        return kafka.ssl_bootstrap, ["security.protocol=SSL", f"ssl.ca.location={pki.ca[0]}",
                                     f"ssl.certificate.location={cert}",
                                     f"ssl.key.location={key}"]
    props = kafka.sasl.client_config(user, password, mechanism, protocol=listener)
    lines = [f"{k}={v}" for k, v in props.items()]
    if listener == "SASL_SSL":
        return kafka.sasl_ssl_bootstrap, lines + [f"ssl.ca.location={pki.ca[0]}"]
    return kafka.bootstrap, lines


def start_ackd(ackd, bootstrap, props, subscriptions=None, wait=True):
    cfg = {"kafka": {"producer": props,
                     "consumer": props + ["session.timeout.ms=6000",
                                          "heartbeat.interval.ms=500"]},
           "publish": {"ack_timeout_ms": ACK_TIMEOUT_MS}}
    return ackd(config=cfg, subscriptions=subscriptions, brokers=bootstrap, wait=wait)


def new_topic(kafka, partitions=1, prefix="sec"):
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    kafka.create_topic(name, partitions=partitions)
    return name


def subscription(topic, sink, **extra):
    return {"name": "sec", "topics": [topic], "group": f"grp-{topic}",
            "url": sink.url("/hook"), "timeout_ms": 5000,
            "retry": {"initial_ms": 200, "max_ms": 1000, "max_attempts": 3,
                      "max_retry_after_ms": 5000},
            **extra}


def status(daemon):
    r = daemon.http.get("/v1/status")
    assert r.status == 200, r.body
    return r.json()


def wait_committed(kafka, group, topic, expected, timeout=DELIVERY_TIMEOUT):
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


def timed_post(daemon, path, body):
    t0 = time.monotonic()
    r = daemon.http.post(path, body=body)
    return r, time.monotonic() - t0


# --- the harness -------------------------------------------------------------

def test_the_ssl_listener_requires_a_trusted_client_certificate(secure_kafka, pki):
    """The SSL listener really checks client certificates, so what passes
    below passes because of ackd's certificate."""
    def client(cert=None):
        config = {"bootstrap.servers": secure_kafka.ssl_bootstrap, "security.protocol": "SSL",
                  "ssl.ca.location": str(pki.ca[0]), "log_level": 0}
        if cert:
            config.update({"ssl.certificate.location": str(cert[0]),
                           "ssl.key.location": str(cert[1])})
        return AdminClient(config)

    assert client(pki.client).list_topics(timeout=10).brokers
    for cert in (None, pki.rogue_client):
        with pytest.raises(KafkaException):
            client(cert).list_topics(timeout=3)


# --- publish, consume, dead-letter through each listener ---------------------

LISTENERS = [("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
             ("SASL_SSL", "SCRAM-SHA-512"), ("SSL", None)]


@pytest.mark.parametrize("listener,mechanism", LISTENERS,
                         ids=[f"{l}-{m}" if m else l for l, m in LISTENERS])
def test_publish_consume_and_dead_letter(ackd, secure_kafka, pki, webhook_sink, listener,
                                         mechanism):
    kafka, sink = secure_kafka, webhook_sink
    topic = new_topic(kafka, partitions=2)
    dlq = new_topic(kafka, prefix="sec-dlq")
    kafka.produce(topic, b"direct", key=b"k0")
    # The first request is refused as poison: its dead letter goes out
    # through ackd's producer, logged in like the rest.
    sink.script("/hook", 422)
    bootstrap, props = security(kafka, pki, listener, mechanism)
    daemon = start_ackd(ackd, bootstrap, props,
                        subscriptions=[subscription(topic, sink, dead_letter_topic=dlq)])

    r = daemon.http.post(f"/v1/topics/{topic}?key=k1", body=b"single")
    assert r.status == 200, r.body
    single = r.json()
    assert single["status"] == "delivered"
    r = daemon.http.post(f"/v1/topics/{topic}/records",
                         body={"records": [{"key": "k2", "value": "batch"}]})
    assert r.status == 200, r.body
    [batch] = r.json()["results"]
    assert batch["status"] == "delivered"

    stored = {(rec.partition, rec.offset): rec for rec in kafka.read_topic(topic)}
    assert len(stored) == 3
    assert stored[(single["partition"], single["offset"])].value == b"single"
    assert stored[(batch["partition"], batch["offset"])].value == b"batch"

    got = sink.wait_for(3, timeout=DELIVERY_TIMEOUT, path="/hook")
    assert sorted(req.body for req in got) == [b"batch", b"direct", b"single"]
    [refused] = [req for req in got if req.status == 422]
    wait_until(lambda: kafka.read_topic(dlq), DELIVERY_TIMEOUT, "the dead letter")
    [dead] = kafka.read_topic(dlq)
    assert dead.value == refused.body
    assert dead.header("ackd-dlq-source-topic") == topic.encode()

    ends = {}
    for rec in kafka.read_topic(topic):
        ends[rec.partition] = rec.offset + 1
    wait_committed(kafka, f"grp-{topic}", topic, ends)
    wait_until(lambda: daemon.http.get("/readyz").status == 200, 10, "/readyz 200")
    assert status(daemon)["kafka"]["reachable"] is True


# --- refused logins ----------------------------------------------------------

def check_refused(daemon, kafka, topic, sink, log_words):
    """ackd is up and not ready, says why, spools publishes without waiting
    for Kafka and sends nothing to Kafka or the webhook. Returns the spooled
    ids."""
    # Right after start: the first publishes must not wait for metadata
    # requests that cannot succeed (they waited 3 to 6 s per topic lookup).
    ids = []
    for i in range(3):
        r, took = timed_post(daemon, f"/v1/topics/{topic}?ack=spool", f"held-{i}".encode())
        assert r.status == 202, r.body
        assert took < SPOOL_ANSWER_S, f"ack=spool answered after {took:.1f}s"
        ids.append(r.json()["id"])

    wait_until(lambda: "kafka refused the login" in daemon.stderr_text(), 20,
               "ackd to log the refused login")
    log = daemon.stderr_text()
    assert any(w in log for w in log_words), log
    r = daemon.http.get("/readyz")
    assert r.status == 503, r.body
    reasons = r.json()["reasons"]
    assert any(reason.startswith("kafka refused the login: ") and
               any(w in reason for w in log_words) for reason in reasons), reasons

    r, took = timed_post(daemon, f"/v1/topics/{topic}/records?ack=spool",
                         {"records": [{"value": "held-batch"}]})
    assert r.status == 202, r.body
    assert took < SPOOL_ANSWER_S, f"a batch with ack=spool answered after {took:.1f}s"
    ids.append(r.json()["results"][0]["id"])
    r, took = timed_post(daemon, f"/v1/topics/{topic}?ack=kafka", b"held-kafka")
    assert r.status == 202, r.body
    assert ACK_TIMEOUT_MS / 1000 - 0.2 < took < ACK_TIMEOUT_MS / 1000 + 1.0, \
        f"ack=kafka answered after {took:.1f}s, ack_timeout_ms is {ACK_TIMEOUT_MS}"
    ids.append(r.json()["id"])

    assert daemon.healthy()
    doc = status(daemon)
    assert doc["spool"]["records"] == 5, doc
    assert doc["kafka"]["reachable"] is False, doc
    assert kafka.read_topic(topic) == []
    assert sink.received() == []
    return ids


def check_recovered(daemon, kafka, topic, sink, ids):
    """Without a restart: the spool reaches Kafka and the webhook, ackd is ready."""
    got = sink.wait_for(len(ids), timeout=60, path="/hook")
    assert sorted(req.header("webhook-id") for req in got) == sorted(ids)
    stored = kafka.read_topic(topic)
    assert sorted(rec.header("ackd-id").decode() for rec in stored) == sorted(ids)
    wait_until(lambda: status(daemon)["spool"]["records"] == 0, 10, "the spool to drain")
    wait_until(lambda: daemon.http.get("/readyz").status == 200, 20, "/readyz 200")
    assert "kafka accepts the login again" in daemon.stderr_text()


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_wrong_scram_password_until_the_broker_is_fixed(ackd, secure_kafka, pki,
                                                          webhook_sink, listener):
    kafka, sink = secure_kafka, webhook_sink
    topic = new_topic(kafka)
    user = f"u{uuid.uuid4().hex[:8]}"
    kafka.set_scram_password("SCRAM-SHA-512", user, "not-what-ackd-has")
    bootstrap, props = security(kafka, pki, listener, user=user, password="ackd-has-this")
    daemon = start_ackd(ackd, bootstrap, props, subscriptions=[subscription(topic, sink)])

    ids = check_refused(daemon, kafka, topic, sink, ["Authentication failed"])

    # The broker's administrator gives the user the password ackd has.
    kafka.set_scram_password("SCRAM-SHA-512", user, "ackd-has-this")
    check_recovered(daemon, kafka, topic, sink, ids)


def test_an_untrusted_client_certificate_until_the_broker_trusts_its_ca(ackd, secure_kafka,
                                                                        pki, webhook_sink):
    """Last in this module: it changes the broker's trust store."""
    kafka, sink = secure_kafka, webhook_sink
    topic = new_topic(kafka)
    bootstrap, props = security(kafka, pki, "SSL", client=pki.rogue_client)
    daemon = start_ackd(ackd, bootstrap, props, subscriptions=[subscription(topic, sink)])

    ids = check_refused(daemon, kafka, topic, sink, ["SSL", "certificate"])

    # The broker is told to trust the second CA too, and restarted.
    kafka.stop_broker(1)
    pki.truststore.write_text(pki.ca[0].read_text() + pki.rogue_ca[0].read_text())
    kafka.start_broker(1)
    check_recovered(daemon, kafka, topic, sink, ids)
