"""ackd warns, once per topic, where acks=all cannot protect a message: a
replication factor below 3 or min.insync.replicas below 2 (README, "Why": the
broker is the second place Kafka users lose messages)."""

import time
import uuid

from confluent_kafka import Consumer

from ackd_proc import Ackd, find_ackd
from kafka import KafkaCluster, wait_until


def topic_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def warnings_for(daemon, topic):
    return [line for line in daemon.stderr_text().splitlines()
            if f"topic {topic}:" in line and "warn" in line]


def test_a_single_replica_topic_is_warned_about_once(kafka, ackd):
    topic = topic_name("unsafe")
    kafka.create_topic(topic, partitions=1, rf=1)
    daemon = ackd()
    for _ in range(3):
        r = daemon.http.post(f"/v1/topics/{topic}", b"x")
        assert r.status == 200, r.body
    wait_until(lambda: len(warnings_for(daemon, topic)) == 2, 10,
               "the replication factor and min.insync.replicas warnings")
    text = "\n".join(warnings_for(daemon, topic))
    assert f"topic {topic}: replication factor 1;" in text
    assert f"topic {topic}: min.insync.replicas=1;" in text
    # More publishes, and a publish after the topic cache refreshed: still once each.
    for _ in range(3):
        assert daemon.http.post(f"/v1/topics/{topic}", b"y").status == 200
    assert len(warnings_for(daemon, topic)) == 2


def test_a_safe_topic_is_not_warned_about(kafka3, ackd):
    topic = topic_name("safe")
    kafka3.create_topic(topic, partitions=1, rf=3, configs={"min.insync.replicas": 2})
    daemon = ackd(brokers=kafka3.bootstrap)
    r = daemon.http.post(f"/v1/topics/{topic}", b"x")
    assert r.status == 200, r.body
    # The check runs right after the first metadata answer; give it a moment,
    # then a warning would be in the log already.
    unsafe = topic_name("unsafe3")
    kafka3.create_topic(unsafe, partitions=1, rf=3, configs={"min.insync.replicas": 1})
    assert daemon.http.post(f"/v1/topics/{unsafe}", b"x").status == 200
    wait_until(lambda: warnings_for(daemon, unsafe), 10, "the min.insync.replicas warning")
    assert warnings_for(daemon, topic) == []
    assert "replication factor" not in "\n".join(warnings_for(daemon, unsafe))


class AutoCreatingCluster(KafkaCluster):
    """A broker that creates any topic a metadata request may create."""

    def settings(self):
        return {**super().settings(), "auto.create.topics.enable": "true"}


def topic_exists(cluster, name):
    md = cluster.admin().list_topics(timeout=10)
    return name in md.topics


def test_asking_about_an_unknown_topic_never_creates_it():
    """On a broker with auto.create.topics.enable=true, a publish to an
    unknown topic is answered 404 and the topic still does not exist: the
    metadata probe must not create topics for whoever names them."""
    with AutoCreatingCluster(brokers=1) as cluster:
        daemon = Ackd(find_ackd(), cluster.bootstrap, name="ackd-autocreate")
        try:
            daemon.start()
            # The control: this broker does create topics for a client that lets it.
            control = topic_name("control")
            Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "probe",
                      "allow.auto.create.topics": True}).list_topics(control, timeout=10)
            wait_until(lambda: topic_exists(cluster, control), 15,
                       "the control topic to be auto-created")
            names = [topic_name("nosuch") for _ in range(3)]
            for name in names:
                r = daemon.http.post(f"/v1/topics/{name}", b"x")
                assert r.status == 404, (r.status, r.body)
            time.sleep(2)
            for name in names:
                assert not topic_exists(cluster, name), f"{name} was created"
                # Asked again after the missing-topic TTL: still 404, still absent.
                assert daemon.http.post(f"/v1/topics/{name}", b"x").status == 404
            assert not any(topic_exists(cluster, n) for n in names)
        finally:
            daemon.close()
