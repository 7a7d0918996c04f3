"""ackd under a simulated service manager: systemd's notify protocol on a
datagram socket this test binds (READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1,
each from ackd's own pid, as NotifyAccess=main requires) and socket
activation (listening sockets this test creates, passed as descriptors 3, 4,
... with LISTEN_PID and LISTEN_FDS, as systemd passes them)."""

import os
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ackd_proc import START_TIMEOUT, STOP_TIMEOUT, Ackd, find_ackd

WATCHDOG_USEC = 2000000  # ackd pings every WATCHDOG_USEC / 2 = 1 s
PING_WITHIN = 1.5

# Runs in front of ackd as a service manager's exec step does: moves the
# descriptors named in argv[1] to 3, 4, ..., sets LISTEN_PID to the pid ackd
# will have (exec keeps it) and LISTEN_FDS, then execs argv[2:].
PASS_FDS = r"""
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)  # inheritable, as a service manager passes them
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.argv[2], sys.argv[2:])
"""


class NotifySocket:
    """The service manager's end: every datagram, its sender's pid and when it came."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        # As systemd does: the kernel then attaches the sender's credentials.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages = []  # (monotonic time, sender pid, [lines])

    def receive(self, timeout):
        """The next message, or None after timeout seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        msg = (time.monotonic(), pid, data.decode().split("\n"))
        self.messages.append(msg)
        return msg

    def wait_for(self, line, timeout, daemon=None):
        """The first message holding line, within timeout seconds; fails at
        once when daemon exits before it is sent."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.receive(min(left, 0.2))
            if msg is None:
                if left <= 0:
                    seen = [m[2] for m in self.messages]
                    raise AssertionError(f"no {line} within {timeout}s; received {seen}")
                if daemon is not None and daemon.proc.poll() is not None:
                    raise AssertionError(f"{daemon.name} exited with {daemon.proc.returncode} "
                                         f"before sending {line}:\n{daemon.stderr_text()}")
                continue
            if line in msg[2]:
                return msg

    def states(self):
        """The state changes received so far, in order (STATUS= lines left out)."""
        return [line for _, _, lines in self.messages for line in lines
                if line in ("READY=1", "WATCHDOG=1", "STOPPING=1", "RELOADING=1")]

    def close(self):
        self.sock.close()


@pytest.fixture
def short_tmp():
    """A temporary directory with a short path (Unix socket paths are limited)."""
    path = Path(tempfile.mkdtemp(prefix="ackd-sd"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def manager(short_tmp):
    sock = NotifySocket(short_tmp / "notify")
    yield sock
    sock.close()


@pytest.fixture
def daemons(request):
    """Ackd instances made by the test, stopped at the end; their stderr goes
    into the report of a failed test (see conftest.py)."""
    started = []
    request.node.ackd_instances = started
    yield started
    for daemon in reversed(started):
        daemon.close()


def supervised(daemons, brokers, manager, env=None, **kwargs):
    """An ackd (not started) that the manager fixture supervises."""
    base = {"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": None, "WATCHDOG_PID": None,
            "LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
    daemon = Ackd(find_ackd(), brokers, env={**base, **(env or {})},
                  name=f"ackd#{len(daemons) + 1}", **kwargs)
    daemons.append(daemon)
    return daemon


def listening_tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s


def listening_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(64)
    return s


def socket_inodes(pid):
    """The inodes of the sockets in a process's descriptor table."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[len("socket:["):-1]))
    return out


# --- notify ----------------------------------------------------------------

def test_ready_then_watchdog_then_stopping(mock_kafka, daemons, manager):
    daemon = supervised(daemons, mock_kafka.bootstrap, manager,
                        env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    daemon.start(wait=False)

    ready_at, sender, _ = manager.wait_for("READY=1", START_TIMEOUT, daemon)
    assert sender == daemon.proc.pid
    assert manager.states() == ["READY=1"]
    # READY=1 means the listeners are up: no retry needed.
    assert daemon.http.get("/healthz").status == 200
    assert daemon.unix.get("/healthz").status == 200

    first, sender, _ = manager.wait_for("WATCHDOG=1", PING_WITHIN)
    assert sender == daemon.proc.pid
    assert first - ready_at <= PING_WITHIN
    second, _, _ = manager.wait_for("WATCHDOG=1", PING_WITHIN)
    assert 0.5 <= second - first <= PING_WITHIN  # every 1 s, not in a burst

    daemon.signal(signal.SIGTERM)
    _, sender, _ = manager.wait_for("STOPPING=1", STOP_TIMEOUT)
    assert sender == daemon.proc.pid
    assert daemon.wait_exit() == 0

    states = manager.states()
    assert states[0] == "READY=1"
    assert states.count("READY=1") == 1
    assert states.count("STOPPING=1") == 1
    stopping = states.index("STOPPING=1")
    assert set(states[1:stopping]) == {"WATCHDOG=1"}


def test_watchdog_meant_for_another_process_is_off(mock_kafka, daemons, manager):
    daemon = supervised(daemons, mock_kafka.bootstrap, manager,
                        env={"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
    daemon.start(wait=False)
    manager.wait_for("READY=1", START_TIMEOUT, daemon)
    deadline = time.monotonic() + 2 * PING_WITHIN
    while time.monotonic() < deadline:
        manager.receive(deadline - time.monotonic())
    assert "WATCHDOG=1" not in manager.states()
    daemon.signal(signal.SIGTERM)
    manager.wait_for("STOPPING=1", STOP_TIMEOUT)
    assert daemon.wait_exit() == 0


def test_sighup_reports_reloading_then_ready(mock_kafka, daemons, manager):
    daemon = supervised(daemons, mock_kafka.bootstrap, manager)
    daemon.start(wait=False)
    manager.wait_for("READY=1", START_TIMEOUT, daemon)

    daemon.signal(signal.SIGHUP)
    _, sender, lines = manager.wait_for("RELOADING=1", 5)
    assert sender == daemon.proc.pid
    # systemd 253's Type=notify-reload wants the reload's start time.
    stamps = [line for line in lines if line.startswith("MONOTONIC_USEC=")]
    assert len(stamps) == 1 and int(stamps[0].split("=", 1)[1]) > 0
    manager.wait_for("READY=1", 5)
    assert manager.states() == ["READY=1", "RELOADING=1", "READY=1"]
    assert daemon.http.get("/healthz").status == 200

    daemon.signal(signal.SIGTERM)
    manager.wait_for("STOPPING=1", STOP_TIMEOUT)
    assert daemon.wait_exit() == 0


# --- socket activation -----------------------------------------------------

def test_passed_sockets_are_served_and_left_to_their_owner(mock_kafka, daemons, manager):
    daemon = supervised(daemons, mock_kafka.bootstrap, manager)
    # The test holds both addresses: had ackd bound its own sockets, the TCP
    # bind would fail with EADDRINUSE and the Unix path would be refused as
    # "another process is listening there".
    tcp = listening_tcp(daemon.http_port)
    unix = listening_unix(daemon.unix_path)
    os.chmod(daemon.unix_path, 0o640)  # a SocketMode= ackd must not change
    stray = listening_tcp(0)  # a socket ackd's configuration does not name
    passed = [tcp, unix, stray]
    try:
        daemon.pass_fds = tuple(s.fileno() for s in passed)
        daemon.wrapper = [sys.executable, "-c", PASS_FDS,
                          ",".join(str(s.fileno()) for s in passed)]
        daemon.env["LISTEN_FDNAMES"] = "http:unix:stray"
        daemon.start(wait=False)
        manager.wait_for("READY=1", START_TIMEOUT, daemon)

        assert daemon.http.get("/healthz").status == 200
        assert daemon.unix.get("/healthz").status == 200
        held = socket_inodes(daemon.proc.pid)
        assert os.fstat(tcp.fileno()).st_ino in held
        assert os.fstat(unix.fileno()).st_ino in held
        # The stray one is reported and closed.
        assert os.fstat(stray.fileno()).st_ino not in held
        stray_port = stray.getsockname()[1]
        assert any("stray" in line and f"127.0.0.1:{stray_port}" in line
                   for line in daemon.stderr_text().splitlines()), daemon.stderr_text()
        assert stat.S_IMODE(os.stat(daemon.unix_path).st_mode) == 0o640

        daemon.signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1", STOP_TIMEOUT)
        assert daemon.wait_exit() == 0

        # The service manager's sockets outlive ackd: the Unix socket file is
        # still there and both still take connections for the next ackd.
        assert stat.S_ISSOCK(os.stat(daemon.unix_path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(daemon.unix_path))
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5):
            pass
    finally:
        for s in passed:
            s.close()
