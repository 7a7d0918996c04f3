"""pytest fixtures for the ackd integration tests.

kafka        a real single-broker Apache Kafka (session; started on first use)
kafka3       three KRaft brokers, replication factor 3, min.insync.replicas=2
             (module; started on first use) for broker fault tests
mock_kafka   librdkafka's mock cluster, three brokers, driven by tests/mock/ackd-mock
ackd         factory: ackd(config={...}, subscriptions=[...], brokers=...) starts the
             daemon and waits for GET /healthz; stopped with SIGTERM at the end
webhook_sink an HTTP server in this process recording requests (TCP and Unix)

Nothing starts until a test asks for it, so selecting tests that need no
Kafka starts no Kafka. When a test fails, each ackd's stderr is added to the
report.
"""

import pytest

from ackd_proc import Ackd, find_ackd, find_mock
from kafka import KafkaCluster
from mock import MockCluster
from webhook_sink import WebhookSink

_kafka_started = []


@pytest.fixture(scope="session")
def kafka():
    with KafkaCluster(brokers=1) as cluster:
        _kafka_started.append(cluster)
        yield cluster


@pytest.fixture(scope="module")
def kafka3():
    with KafkaCluster(brokers=3) as cluster:
        _kafka_started.append(cluster)
        yield cluster


@pytest.fixture
def mock_kafka(request):
    with MockCluster(find_mock(), brokers=3) as mock:
        request.node.mock_instances = [mock]
        yield mock


@pytest.fixture
def webhook_sink():
    with WebhookSink(unix=True) as sink:
        yield sink


@pytest.fixture
def ackd_bin():
    return find_ackd()


@pytest.fixture
def ackd(request, ackd_bin):
    """Factory for running ackd daemons. Arguments:

    config         dict merged into the generated config (None deletes a key)
    subscriptions  list of subscription dicts
    brokers        bootstrap servers; default: the kafka fixture's broker
    args           extra command-line arguments
    spool_dir      share another instance's spool; unix_path likewise
    wait           wait for GET /healthz 200 (default True)
    """
    started = []
    request.node.ackd_instances = started

    def start(config=None, subscriptions=None, brokers=None, args=(), spool_dir=None,
              unix_path=None, wait=True):
        if brokers is None:
            brokers = request.getfixturevalue("kafka").bootstrap
        daemon = Ackd(ackd_bin, brokers, config=config, subscriptions=subscriptions,
                      args=args, spool_dir=spool_dir, unix_path=unix_path,
                      name=f"ackd#{len(started) + 1}")
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start

    failures = []
    for daemon in reversed(started):
        try:
            daemon.close()
        except Exception as e:  # every daemon is stopped even when one fails
            failures.append(f"{daemon.name}: {e}")
    if failures:
        pytest.fail("ackd shutdown failed: " + "; ".join(failures), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for daemon in getattr(item, "ackd_instances", []):
        report.sections.append((f"{daemon.name} stderr ({report.when})",
                                daemon.stderr_text() or "(empty)"))
    for mock in getattr(item, "mock_instances", []):
        report.sections.append((f"ackd-mock stderr ({report.when})",
                                mock.stderr_text() or "(empty)"))


def pytest_terminal_summary(terminalreporter):
    for cluster in _kafka_started:
        terminalreporter.write_line(
            f"kafka: Apache Kafka {cluster.version}, {len(cluster.nodes)} broker(s), "
            f"started in {cluster.start_seconds:.1f}s")
