"""A real Apache Kafka cluster for the integration tests.

Brokers run in KRaft combined mode (process.roles=broker,controller) from the
jars that tests/kafka/fetch-kafka.sh caches, on 127.0.0.1 with free ports, in a
temporary directory. One node makes the single-broker cluster; three nodes make
the fault-test cluster (replication factor 3, min.insync.replicas=2), where any
one node can be stopped, killed or restarted while the other two keep the
controller quorum.

The broker is the suite's Kafka 4.1 or, for the broker matrix, Kafka 3.9
(ACKD_KAFKA_BROKER=compat, see kafka_libs). Both run KRaft the same way here:
a static quorum (controller.quorum.voters), storage formatted with
kafka.tools.StorageTool (--add-scram included, since 3.5), PEM key stores,
log4j 2 through slf4j 1.7. The one difference is the share-group (KIP-932)
settings, which 3.9 does not have and which are left out for it.

    with KafkaCluster(brokers=1) as kafka:
        kafka.create_topic("orders", partitions=3)
        ...
        records = kafka.read_topic("orders")

With sasl=, clients authenticate: every node gets a SASL_PLAINTEXT listener
for clients next to its PLAINTEXT one (inter-broker traffic) and the
controller's. The mechanisms are PLAIN (users in the listener's JAAS config)
and/or SCRAM-SHA-256 and SCRAM-SHA-512 (credentials written into the metadata
log when the storage is formatted, as `kafka-storage format --add-scram`
does; set_scram_password changes one later with the broker's ConfigCommand,
as `kafka-configs --alter` does). There is no authorizer: authentication is
what is tested. The cluster's own helpers (admin, create_topic, read_topic,
produce, committed) go through the SASL listener as the client user ("admin"
when there is one); a Python client on a librdkafka older than 2.6.1 cannot
log in to Kafka 4 with SCRAM (SCRAM_MIN_LIBRDKAFKA), so with SCRAM they then
use the PLAINTEXT listener instead.

With tls= (a Tls: PEM files made by the test), every node also gets an SSL
listener that requires a client certificate signed by a CA in the trust
file, and with sasl= a SASL_SSL listener (the same mechanisms, no client
certificate). The trust file is read when the node starts: a test that
rewrites it restarts the node.

    users = {"admin": "admin-secret", "ackd": "ackd-secret"}
    with KafkaCluster(sasl={"mechanism": "PLAIN", "users": users}) as kafka:
        kafka.create_topic("orders")
        props = kafka.sasl_properties("ackd")   # ["security.protocol=...", ...]

    sasl = {"mechanisms": ["SCRAM-SHA-256", "SCRAM-SHA-512"], "users": users}
    with KafkaCluster(sasl=sasl, tls=Tls(keystore, truststore)) as kafka:
        kafka.sasl_ssl_bootstrap, kafka.ssl_bootstrap
"""

import base64
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import confluent_kafka
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "tests" / "kafka" / "fetch-kafka.sh"

FETCH_TIMEOUT = 600
FORMAT_TIMEOUT = 60
START_TIMEOUT = 90
STOP_TIMEOUT = 30
CLOSE_TIMEOUT = 15

# C1 only: on two cores a three-broker cluster starts in ~5s instead of ~13s.
# ACKD_KAFKA_JVM_OPTS replaces these (space-separated), e.g. for benchmarks.
JVM_OPTS = os.environ.get("ACKD_KAFKA_JVM_OPTS", "").split() or [
    "-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true"]

LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = INFO
"""


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# librdkafka before 2.6.1 repeats the client nonce in its SCRAM final message;
# Kafka 4 brokers check the nonce strictly (RFC 5802) and answer "invalid
# credentials" (confluentinc/librdkafka#4895). The Java client is not affected.
SCRAM_MIN_LIBRDKAFKA = (2, 6, 1)
SASL_LISTENER = "SASL_PLAINTEXT"
SASL_SSL_LISTENER = "SASL_SSL"
SSL_LISTENER = "SSL"
# User names and passwords go into JAAS and --add-scram texts unquoted or in
# double quotes; these characters need no escaping in either.
SASL_SAFE = re.compile(r"[A-Za-z0-9._@+-]+")


@dataclasses.dataclass(frozen=True)
class Tls:
    """TLS for clients, as PEM files: keystore holds the broker's private key
    (PKCS#8, unencrypted) and certificate chain, truststore the CAs whose
    client certificates the SSL listener accepts (and that sign the broker's)."""
    keystore: Path
    truststore: Path

    def server_settings(self):
        return {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.truststore),
            f"listener.name.{SSL_LISTENER.lower()}.ssl.client.auth": "required",
        }


@dataclasses.dataclass(frozen=True)
class Sasl:
    """SASL authentication for clients: the mechanisms the listeners enable,
    the users ({name: password}) and the user and mechanism (the first) the
    harness's own clients log in with."""
    mechanism: str
    users: dict
    client_user: str
    mechanisms: tuple = ()

    @classmethod
    def of(cls, spec):
        """From a Sasl or a dict {"mechanism" or "mechanisms", "users", optional
        "client_user"} (default client user: "admin" when there is one, else
        the first)."""
        if isinstance(spec, cls):
            return spec
        mechanisms = tuple(m.upper() for m in
                           spec.get("mechanisms") or [spec.get("mechanism", "PLAIN")])
        users = dict(spec.get("users") or {})
        for mechanism in mechanisms:
            if mechanism not in SASL_MECHANISMS:
                raise ValueError(f"sasl mechanism {mechanism!r} is not one of "
                                 f"{SASL_MECHANISMS}")
        if not users:
            raise ValueError("sasl needs at least one user")
        for name, password in users.items():
            if not SASL_SAFE.fullmatch(name) or not SASL_SAFE.fullmatch(password):
                raise ValueError(f"sasl user {name!r}: names and passwords must match "
                                 f"{SASL_SAFE.pattern}")
        client_user = spec.get("client_user") or ("admin" if "admin" in users
                                                  else next(iter(users)))
        if client_user not in users:
            raise ValueError(f"sasl client_user {client_user!r} is not among the users")
        return cls(mechanisms[0], users, client_user, mechanisms)

    @property
    def scram(self):
        """The harness's own clients log in with SCRAM."""
        return self.mechanism.startswith("SCRAM-")

    @staticmethod
    def jaas(mechanism, users):
        """The server side JAAS entry of mechanism on a SASL listener."""
        if mechanism.startswith("SCRAM-"):
            return "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        entries = " ".join(f'user_{n}="{p}"' for n, p in users.items())
        return f"org.apache.kafka.common.security.plain.PlainLoginModule required {entries};"

    def server_settings(self, listeners):
        enabled = ",".join(self.mechanisms)
        settings = {"sasl.enabled.mechanisms": enabled}
        for listener in listeners:
            prefix = f"listener.name.{listener.lower()}"
            settings[f"{prefix}.sasl.enabled.mechanisms"] = enabled
            for mechanism in self.mechanisms:
                settings[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = \
                    self.jaas(mechanism, self.users)
        return settings

    def format_args(self):
        """kafka-storage format arguments creating the SCRAM credentials."""
        args = []
        for mechanism in self.mechanisms:
            if mechanism.startswith("SCRAM-"):
                for name, password in self.users.items():
                    args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return args

    def client_config(self, user=None, password=None, mechanism=None,
                      protocol=SASL_LISTENER):
        """librdkafka properties logging in as user (default: the client user)
        with password (default: the user's own) and mechanism (default: the
        first)."""
        user = user or self.client_user
        if password is None:
            password = self.users[user]
        return {"security.protocol": protocol,
                "sasl.mechanisms": mechanism or self.mechanism,
                "sasl.username": user, "sasl.password": password}


def librdkafka_version():
    """The (major, minor, patch) of the librdkafka the Python client runs on."""
    num = confluent_kafka.libversion()[1]
    return (num >> 24 & 0xff, num >> 16 & 0xff, num >> 8 & 0xff)


def log(msg):
    print(f"kafka-harness: {msg}", file=sys.stderr, flush=True)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, interval=0.1, alive=None):
    """Poll predicate() until true; raise TimeoutError naming what.

    alive, when given, is called on every round and may raise to stop early
    (for example when the process being waited for has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def kafka_libs():
    """The directory holding the Kafka jars, fetched once into the cache:
    ACKD_KAFKA_LIBS when set, else the suite's broker (kafka.version of
    tests/kafka/pom.xml), or with ACKD_KAFKA_BROKER=compat the older broker of
    the matrix (kafka.compat.version)."""
    env = os.environ.get("ACKD_KAFKA_LIBS")
    if env:
        return Path(env)
    which = os.environ.get("ACKD_KAFKA_BROKER", "")
    if which not in ("", "compat"):
        raise ValueError(f"ACKD_KAFKA_BROKER={which!r}: only \"compat\" or empty")
    out = subprocess.run([str(FETCH_SCRIPT), *([which] if which else [])], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=FETCH_TIMEOUT)
    return Path(out.stdout.strip().splitlines()[-1])


def kafka_version(libs):
    """The version in the kafka_2.13-<version>.jar file name."""
    for jar in libs.glob("kafka_2.13-*.jar"):
        m = re.fullmatch(r"kafka_2\.13-(.+)\.jar", jar.name)
        if m and not m.group(1).endswith(("-test", "-sources")):
            return m.group(1)
    raise FileNotFoundError(f"no kafka_2.13 jar in {libs}")


def java_bin():
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise FileNotFoundError("java not found (Debian package openjdk-17-jre-headless)")
    return found


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclasses.dataclass
class Record:
    """One message read back from a topic."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list          # [(name, bytes)], in order, duplicates kept
    timestamp: int         # milliseconds

    def header(self, name):
        """The last value of header name, or None."""
        found = [v for k, v in self.headers if k == name]
        return found[-1] if found else None


class KafkaNode:
    """One KRaft combined broker+controller JVM."""

    def __init__(self, node_id, libs, root, sasl=None, tls=None):
        self.node_id = node_id
        self.sasl = sasl
        self.tls = tls
        self.libs = libs
        self.dir = root / f"node{node_id}"
        self.data_dir = self.dir / "data"
        self.config = self.dir / "server.properties"
        self.log4j = self.dir / "log4j2.properties"
        self.server_log = self.dir / "server.log"
        self.stdout_log = self.dir / "stdout.log"
        self.port = free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port() if sasl else None
        self.ssl_port = free_port() if tls else None
        self.sasl_ssl_port = free_port() if sasl and tls else None
        self.proc = None
        self.dir.mkdir(parents=True)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_address(self):
        return f"127.0.0.1:{self.sasl_port}" if self.sasl else None

    @property
    def ssl_address(self):
        return f"127.0.0.1:{self.ssl_port}" if self.ssl_port else None

    @property
    def sasl_ssl_address(self):
        return f"127.0.0.1:{self.sasl_ssl_port}" if self.sasl_ssl_port else None

    def client_listeners(self):
        """{listener name: port} of the listeners for clients besides PLAINTEXT."""
        ports = {SASL_LISTENER: self.sasl_port, SSL_LISTENER: self.ssl_port,
                 SASL_SSL_LISTENER: self.sasl_ssl_port}
        return {name: port for name, port in ports.items() if port is not None}

    def write_config(self, voters, settings):
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            **settings,
        }
        for name, port in self.client_listeners().items():
            listener = f"{name}://127.0.0.1:{port}"
            props.update({
                "listeners": f"{props['listeners']},{listener}",
                "advertised.listeners": f"{props['advertised.listeners']},{listener}",
                "listener.security.protocol.map": f"{props['listener.security.protocol.map']},"
                                                  f"{name}:{name}",
            })
        if self.sasl:
            props.update(self.sasl.server_settings(
                [n for n in self.client_listeners() if n.startswith("SASL_")]))
        if self.tls:
            props.update(self.tls.server_settings())
        self.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j.write_text(LOG4J2_CONFIG.format(log=self.server_log))

    def java(self, main_class, *args):
        return [java_bin(), *JVM_OPTS, f"-Dlog4j2.configurationFile={self.log4j}",
                "-cp", f"{self.libs}/*", main_class, *args]

    def format(self, cluster_id):
        cmd = self.java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                        "-t", cluster_id, "-c", str(self.config),
                        *(self.sasl.format_args() if self.sasl else []))
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=FORMAT_TIMEOUT)
        if res.returncode != 0:
            raise RuntimeError(f"kafka storage format failed for node {self.node_id}:\n"
                               f"{res.stdout}")

    def start(self):
        """Launch the JVM; does not wait (see KafkaCluster.wait_ready)."""
        if self.running():
            raise RuntimeError(f"kafka node {self.node_id} is already running")
        with open(self.stdout_log, "ab") as out:
            self.proc = subprocess.Popen(self.java("kafka.Kafka", str(self.config)),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"kafka node {self.node_id} exited with "
                               f"{self.proc.returncode}:\n{self.log_tail()}")

    def wait_listening(self, timeout):
        for port in (self.port, *self.client_listeners().values()):
            if port is not None:
                wait_until(lambda: port_open(port), timeout,
                           f"kafka node {self.node_id} to listen on {port}",
                           alive=self.check_alive)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (controlled shutdown), then SIGKILL when it takes too long."""
        if not self.running():
            return
        self.signal(signal.SIGTERM)
        self.wait_or_kill(timeout)

    def signal(self, signum):
        if self.running():
            self.proc.send_signal(signum)

    def wait_or_kill(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"node {self.node_id} still running {timeout:.0f}s after SIGTERM, killing it")
            self.kill9()

    def kill9(self):
        if not self.running():
            return
        self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines=40):
        text = ""
        for path in (self.stdout_log, self.server_log):
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
        return text

    def started_version(self):
        """The version the broker logged at start ("Kafka version: X"), or None."""
        if not self.server_log.exists():
            return None
        m = re.search(r"Kafka version: (\S+)", self.server_log.read_text(errors="replace"))
        return m.group(1) if m else None


class KafkaCluster:
    """A KRaft cluster of combined nodes on loopback."""

    def __init__(self, brokers=1, workdir=None, libs=None, sasl=None, tls=None):
        """sasl: None (plain clients), or a Sasl or dict (see Sasl.of);
        tls: None, or a Tls (SSL and, with sasl, SASL_SSL listeners)."""
        self.sasl = Sasl.of(sasl) if sasl else None
        self.tls = tls
        self.libs = Path(libs) if libs else kafka_libs()
        self.version = kafka_version(self.libs)
        self._own_dir = workdir is None
        self.root = Path(workdir or tempfile.mkdtemp(prefix="ackd-kafka-"))
        self.nodes = [KafkaNode(i + 1, self.libs, self.root, self.sasl, self.tls)
                      for i in range(brokers)]
        self.start_seconds = None
        self._admin = None

    # --- life cycle ------------------------------------------------------

    def settings(self):
        n = len(self.nodes)
        rf = min(n, 3)
        return {
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "min.insync.replicas": "2" if n >= 3 else "1",
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": "2" if n >= 3 else "1",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # A killed node loses its partitions' leadership in ~3s, not 9s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "log.flush.interval.messages": "9223372036854775807",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "controlled.shutdown.enable": "true",
            "unclean.leader.election.enable": "false",
            # Share groups (KIP-932) came with Kafka 4.0; 3.9 has no such keys.
            **({"share.coordinator.state.topic.replication.factor": str(rf),
                "share.coordinator.state.topic.min.isr": "2" if n >= 3 else "1"}
               if self.major_version() >= 4 else {}),
        }

    def major_version(self):
        """The broker's major version (4 for 4.1.1), from its jar's name."""
        return int(self.version.split(".")[0])

    def start(self):
        """Format every node (static quorum: controller.quorum.voters, so no
        --standalone or --initial-controllers), start them, wait until ready."""
        t0 = time.monotonic()
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_id = self.random_cluster_id()
        settings = self.settings()
        try:
            for node in self.nodes:
                node.write_config(voters, settings)
                node.format(cluster_id)
            for node in self.nodes:
                node.start()
            self.wait_ready(len(self.nodes))
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        started = self.nodes[0].started_version() or self.version
        auth = f" (SASL {','.join(self.sasl.mechanisms)})" if self.sasl else ""
        auth += " (TLS)" if self.tls else ""
        log(f"Apache Kafka {started} started: {len(self.nodes)} broker(s) at "
            f"{self.bootstrap}{auth} in {self.start_seconds:.1f}s ({self.root})")
        return self

    @staticmethod
    def random_cluster_id():
        """A cluster id as kafka-storage random-uuid makes it: 16 bytes, url-safe
        base64 without padding, and (as there) never starting with "-", which the
        command line would take for an option."""
        while True:
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            if not cid.startswith("-"):
                return cid

    def wait_ready(self, brokers, timeout=START_TIMEOUT):
        """Until every running node listens and metadata lists `brokers` brokers."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.running():
                node.wait_listening(max(1.0, deadline - time.monotonic()))
        wait_until(lambda: self.broker_count() >= brokers,
                   max(1.0, deadline - time.monotonic()),
                   f"{brokers} broker(s) in the metadata", interval=0.2,
                   alive=self.check_alive)

    def check_alive(self):
        for node in self.nodes:
            node.check_alive()

    def broker_count(self):
        try:
            md = self.admin().list_topics(timeout=2)
        except KafkaException:
            return 0
        return len(md.brokers)

    def close(self):
        """Stop every node and remove the directory (kept when ACKD_KEEP_KAFKA is set)."""
        self._admin = None
        # All at once: a node stopped last waits for a controller quorum that
        # is already gone, so one at a time would end in SIGKILL anyway.
        running = [n for n in self.nodes if n.running()]
        for node in running:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for node in running:
            node.wait_or_kill(max(0.1, deadline - time.monotonic()))
        if self._own_dir and not os.environ.get("ACKD_KEEP_KAFKA"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- faults ----------------------------------------------------------

    def node(self, node_id):
        """The node with that id (1-based, as node.id in Kafka)."""
        return self.nodes[node_id - 1]

    def stop_broker(self, node_id, timeout=STOP_TIMEOUT):
        self.node(node_id).stop(timeout)

    def kill_broker(self, node_id):
        self.node(node_id).kill9()

    def start_broker(self, node_id, timeout=START_TIMEOUT):
        """Start a stopped node again and wait until every running node is back in
        the metadata."""
        node = self.node(node_id)
        node.start()
        node.wait_listening(timeout)
        running = sum(1 for n in self.nodes if n.running())
        wait_until(lambda: self.broker_count() >= running, timeout,
                   f"node {node_id} back in the metadata", interval=0.2,
                   alive=node.check_alive)

    def restart_broker(self, node_id, kill=False):
        if kill:
            self.kill_broker(node_id)
        else:
            self.stop_broker(node_id)
        self.start_broker(node_id)

    # --- clients ---------------------------------------------------------

    @property
    def bootstrap(self):
        """Where clients connect: the SASL listeners when sasl is set."""
        if self.sasl:
            return ",".join(n.sasl_address for n in self.nodes)
        return self.internal_bootstrap

    @property
    def internal_bootstrap(self):
        """The PLAINTEXT listeners (with sasl: meant for inter-broker traffic)."""
        return ",".join(n.address for n in self.nodes)

    @property
    def ssl_bootstrap(self):
        """The SSL listeners (client certificate required); tls only."""
        return ",".join(n.ssl_address for n in self.nodes)

    @property
    def sasl_ssl_bootstrap(self):
        """The SASL_SSL listeners; sasl and tls only."""
        return ",".join(n.sasl_ssl_address for n in self.nodes)

    @property
    def harness_direct(self):
        """The harness's own clients use the PLAINTEXT listener: they log in
        with SCRAM, which a Python client on librdkafka < 2.6.1 cannot do
        against Kafka 4."""
        return (self.sasl is not None and self.sasl.scram and
                librdkafka_version() < SCRAM_MIN_LIBRDKAFKA)

    def _harness(self):
        """(bootstrap, security properties) of the harness's own clients."""
        if self.harness_direct:
            return self.internal_bootstrap, {}
        return self.bootstrap, self.security_config()

    def client_config(self, **extra):
        """Properties of a client of this cluster: bootstrap.servers, and with
        sasl the client user's login; extra adds or replaces properties."""
        return {"bootstrap.servers": self.bootstrap, **self.security_config(), **extra}

    def set_scram_password(self, mechanism, user, password, timeout=60):
        """Create or change a SCRAM credential with the broker's own
        ConfigCommand (kafka-configs --alter --add-config), through the
        PLAINTEXT listener."""
        node = next(n for n in self.nodes if n.running())
        cmd = node.java("kafka.admin.ConfigCommand", "--bootstrap-server", node.address,
                        "--alter", "--entity-type", "users", "--entity-name", user,
                        "--add-config", f"{mechanism}=[password={password}]")
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"kafka-configs --alter for {user} failed:\n{res.stdout}")

    def security_config(self, user=None, password=None):
        """The security properties logging in as user (default: the client
        user) with password (default: the user's); {} without sasl."""
        if not self.sasl:
            if user is not None or password is not None:
                raise ValueError("this cluster has no sasl users")
            return {}
        return self.sasl.client_config(user, password)

    def sasl_properties(self, user=None, password=None):
        """security_config as the "name=value" strings of kafka.producer /
        kafka.consumer in ackd's configuration (and of kcat -X)."""
        return [f"{k}={v}" for k, v in self.security_config(user, password).items()]

    def admin(self):
        if self._admin is None:
            bootstrap, config = self._harness()
            self._admin = AdminClient({"bootstrap.servers": bootstrap, **config})
        return self._admin

    def node_admin(self, node):
        """A new admin client that knows only node, on the listener the
        harness's clients use."""
        _, config = self._harness()
        if self.harness_direct or not self.sasl:
            address = node.address
        else:
            address = node.sasl_address
        return AdminClient({"bootstrap.servers": address, **config})

    def create_topic(self, name, partitions=1, rf=None, configs=None, timeout=30):
        """Create a topic and wait until every partition has a leader."""
        rf = rf or min(len(self.nodes), 3)
        topic = NewTopic(name, num_partitions=partitions, replication_factor=rf,
                         config={k: str(v) for k, v in (configs or {}).items()})
        futures = self.admin().create_topics([topic], request_timeout=timeout)
        deadline = time.monotonic() + timeout
        futures[name].result(timeout=timeout)
        wait_until(lambda: self.topic_ready(name, partitions),
                   max(0.0, deadline - time.monotonic()), f"topic {name} to have leaders")
        # Each broker learns of the topic on its own: a client asking a
        # lagging one would still be told the topic does not exist.
        for node in self.nodes:
            if node.running():
                wait_until(lambda: self.topic_ready(name, partitions, node),
                           max(0.0, deadline - time.monotonic()),
                           f"broker {node.node_id} to know topic {name}")

    def add_partitions(self, name, total, timeout=30):
        """Grow topic name to total partitions and wait until every broker
        knows them, each with a leader."""
        futures = self.admin().create_partitions([NewPartitions(name, total)],
                                                 request_timeout=timeout)
        futures[name].result(timeout=timeout)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.running():
                wait_until(lambda: self.topic_ready(name, total, node),
                           max(0.0, deadline - time.monotonic()),
                           f"broker {node.node_id} to know {total} partitions of {name}")

    def topic_ready(self, name, partitions, node=None):
        """Whether the cluster (or node alone: a client bootstrapped from it
        asks it first) has topic name with partitions partitions, each with
        a leader."""
        try:
            if node is None:
                md = self.admin().list_topics(topic=name, timeout=2)
            else:
                md = self.node_admin(node).list_topics(topic=name, timeout=2)
        except KafkaException:
            return False
        topic = md.topics.get(name)
        if topic is None or topic.error is not None or len(topic.partitions) != partitions:
            return False
        return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())

    def delete_topic(self, name, timeout=30):
        """Delete topic name and wait until the cluster says it is gone.

        The admin client that saw the topic is then replaced: librdkafka 2.8's
        metadata cache keeps a freed entry when a topic comes back under the
        same name with a new topic id (librdkafka#4964), and a long-lived
        client crashes the test process some time after a topic is
        recreated."""
        futures = self.admin().delete_topics([name], request_timeout=timeout)
        futures[name].result(timeout=timeout)
        wait_until(lambda: name not in self.admin().list_topics(timeout=5).topics, timeout,
                   f"topic {name} to be deleted")
        self._admin = None

    def produce(self, topic, value, key=None, headers=None, partition=None, timeout=30):
        """Produce one message with acks=all and wait for its delivery."""
        bootstrap, config = self._harness()
        return produce(bootstrap, topic, value, key, headers, partition, timeout,
                       config=config)

    def read_topic(self, name, timeout=30):
        """Every message now in the topic, ordered by partition then offset."""
        bootstrap, config = self._harness()
        return read_topic(bootstrap, name, timeout, config=config)

    def committed(self, group, topic, timeout=10):
        """{partition: committed offset} of a consumer group (-1001 when none)."""
        bootstrap, config = self._harness()
        return committed_offsets(bootstrap, group, topic, timeout, config=config)


# --- client helpers shared with the mock cluster --------------------------

def produce(bootstrap, topic, value, key=None, headers=None, partition=None, timeout=30,
            config=None):
    """Produce one message with acks=all; returns (partition, offset). config
    adds client properties (security)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": timeout * 1000,
                         **(config or {})})
    result = {}

    def on_delivery(err, msg):
        result["err"] = err
        result["msg"] = msg

    kwargs = {"value": value, "key": key, "headers": headers, "on_delivery": on_delivery}
    if partition is not None:
        kwargs["partition"] = partition
    producer.produce(topic, **kwargs)
    remaining = producer.flush(timeout + 5)
    if remaining or "err" not in result:
        raise TimeoutError(f"no delivery report for {topic} within {timeout}s")
    if result["err"] is not None:
        raise KafkaException(result["err"])
    return result["msg"].partition(), result["msg"].offset()


def read_topic(bootstrap, name, timeout=30, config=None):
    """Read every message up to the current high watermarks of topic name.
    config adds client properties (security)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ackd-test-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "isolation.level": "read_committed", **(config or {})})
    try:
        md = consumer.list_topics(topic=name, timeout=timeout)
        topic = md.topics.get(name)
        if topic is None or topic.error is not None:
            raise KafkaException(topic.error if topic is not None else f"no topic {name}")
        ends = {}
        for p in topic.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in ends])
        return sorted(drain(consumer, ends, timeout), key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def drain(consumer, ends, timeout):
    """Consume from the assigned partitions until each reaches its end offset."""
    records = []
    pending = dict(ends)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"read_topic: partitions {sorted(pending)} not read to the "
                               f"end within {timeout}s")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                if msg.offset() >= pending.get(msg.partition(), 0):
                    pending.pop(msg.partition(), None)
                continue
            raise KafkaException(msg.error())
        records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                              msg.value(), list(msg.headers() or []), msg.timestamp()[1]))
        if msg.offset() + 1 >= pending.get(msg.partition(), 0):
            pending.pop(msg.partition(), None)
    return records


def committed_offsets(bootstrap, group, topic, timeout=10, config=None):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, **(config or {})})
    try:
        md = consumer.list_topics(topic=topic, timeout=timeout)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=timeout)}
    finally:
        consumer.close()
