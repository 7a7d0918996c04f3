"""librdkafka's mock Kafka cluster, through the tests/mock/ackd-mock helper.

    with MockCluster(mock_bin, brokers=3) as mock:
        mock.create_topic("orders", partitions=3, rf=3)
        mock.broker_down(2)
        mock.push_errors("Produce", "NOT_ENOUGH_REPLICAS", "REQUEST_TIMED_OUT")
        records = mock.read_topic("orders")

Every command waits for the helper's one-line answer and raises MockError on
"error ...". Broker ids are 1..brokers.
"""

import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

import kafka as kafka_helpers

ANSWER_TIMEOUT = 10
START_TIMEOUT = 10
STOP_TIMEOUT = 10


class MockError(RuntimeError):
    pass


class MockCluster:
    def __init__(self, mock_bin, brokers=3):
        self.mock_bin = Path(mock_bin)
        self.brokers = brokers
        self.proc = None
        self.bootstrap = None
        self.stderr_file = None
        self._stderr_kept = ""
        self._buf = b""

    def start(self):
        if not self.mock_bin.exists():
            raise FileNotFoundError(f"{self.mock_bin} not found: run make check first")
        self.stderr_file = tempfile.NamedTemporaryFile(prefix="ackd-mock-", suffix=".log",
                                                       delete=False)
        self.proc = subprocess.Popen([str(self.mock_bin), str(self.brokers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, bufsize=0)
        try:
            self.bootstrap = self._read_line(START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def _read_line(self, timeout):
        """The helper's next output line, without blocking past timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"ackd-mock gave no answer within {timeout}s")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=STOP_TIMEOUT)
                raise MockError(f"ackd-mock exited ({self.proc.returncode}): "
                                f"{self.stderr_text()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def command(self, *words):
        """Send one command line; return on "ok", raise MockError otherwise."""
        line = " ".join(str(w) for w in words)
        self.proc.stdin.write(line.encode() + b"\n")
        answer = self._read_line(ANSWER_TIMEOUT)
        if answer != "ok":
            raise MockError(f"ackd-mock: {line}: {answer}")

    def stderr_text(self):
        if self.stderr_file is None:
            return self._stderr_kept
        return Path(self.stderr_file.name).read_text(errors="replace")

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.wait(timeout=STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
        if self.stderr_file is not None:
            self._stderr_kept = self.stderr_text()
            self.stderr_file.close()
            os.unlink(self.stderr_file.name)
            self.stderr_file = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- commands --------------------------------------------------------

    def create_topic(self, name, partitions=1, rf=1):
        self.command("topic", name, partitions, rf)

    def broker_down(self, broker):
        self.command("down", broker)

    def broker_up(self, broker):
        self.command("up", broker)

    def set_leader(self, topic, partition, broker):
        self.command("leader", topic, partition, broker)

    def set_rtt(self, broker, ms):
        self.command("rtt", broker, ms)

    def push_errors(self, api, *errors):
        """The next len(errors) requests of type api (name or number) fail, in order."""
        self.command("errors", api, *errors)

    def push_broker_errors(self, broker, api, *errors):
        self.command("broker_errors", broker, api, *errors)

    def set_topic_error(self, topic, error):
        self.command("topic_error", topic, error)

    def clear_errors(self, api):
        self.command("clear", api)

    # --- clients ---------------------------------------------------------

    def produce(self, topic, value, key=None, headers=None, partition=None, timeout=30):
        return kafka_helpers.produce(self.bootstrap, topic, value, key, headers, partition,
                                     timeout)

    def read_topic(self, name, timeout=30):
        return kafka_helpers.read_topic(self.bootstrap, name, timeout)

    def committed(self, group, topic, timeout=10):
        return kafka_helpers.committed_offsets(self.bootstrap, group, topic, timeout)

