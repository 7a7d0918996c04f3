"""The foundation: start-up, health, errors, the config checker, the command
line, shutdown, and what ackd does about its spool and Unix socket."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import ackd_proc

VALID_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def short_tmp():
    """A temporary directory with a short path (Unix socket paths are limited)."""
    path = Path(tempfile.mkdtemp(prefix="ackd-s"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def numbered(lines):
    """File text from a list of lines."""
    return "\n".join(lines) + "\n"


def line_of(text, needle):
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise ValueError(f"{needle!r} not in the file")


def reported(output, path):
    """{line number: [messages]} for each "path:line: message" in output."""
    found = {}
    for m in re.finditer(rf"^{re.escape(str(path))}:(\d+): (.+)$", output, re.M):
        found.setdefault(int(m.group(1)), []).append(m.group(2))
    return found


# --- health and routing ---------------------------------------------------

def test_healthz_answers_ok_on_tcp_and_unix_socket(ackd):
    daemon = ackd()
    for client in (daemon.http, daemon.unix):
        r = client.get("/healthz")
        assert r.status == 200, client
        assert r.header("content-type").startswith("application/json"), client
        assert r.json() == {"status": "ok"}, client


def test_connections_on_the_unix_socket_log_nothing(ackd):
    """libmicrohttpd sets TCP options on every connection it is handed; on a
    Unix socket they fail (EOPNOTSUPP). That is not worth a warning, and a
    pair per connection would use up the burst of libmicrohttpd messages
    ackd logs (20 per 10 s), hiding the ones that matter."""
    daemon = ackd()
    for client in (daemon.unix, daemon.http):
        for _ in range(15):
            assert client.get("/healthz").status == 200, client
    assert daemon.stop() == 0
    text = daemon.stderr_text()
    for needle in ("TCP_NODELAY", "TCP_CORK"):
        assert needle not in text, text[-2000:]


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/healthz/extra", "/v1/topics"])
def test_unknown_paths_answer_404_not_found(ackd, path):
    daemon = ackd()
    for client in (daemon.http, daemon.unix):
        r = client.get(path)
        assert r.status == 404, (client, path)
        assert r.header("content-type").startswith("application/json")
        error = r.json()["error"]
        assert error["code"] == "not_found"
        assert isinstance(error["message"], str) and error["message"]


def test_unix_socket_has_the_default_mode(ackd):
    daemon = ackd()
    mode = daemon.unix_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


# --- ackd -n: the config checker ----------------------------------------------

def test_check_accepts_a_valid_config(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    conf = tmp_path / "ackd.conf"
    conf.write_text(ackd_proc.render_libconfig({
        "listen": {"http": "127.0.0.1:8470", "unix": str(tmp_path / "ackd.sock"),
                   "unix_mode": "0660"},
        "limits": {"max_body_bytes": 1048576, "max_batch_records": 10000},
        "kafka": {"brokers": "127.0.0.1:9092", "producer": ["compression.codec=lz4"],
                  "consumer": []},
        "spool": {"dir": str(spool), "fsync": "always", "max_bytes": 1073741824},
        "publish": {"ack": "kafka", "ack_timeout_ms": 10000, "topics": ["orders", "audit.*"]},
        "auth": {"tokens": [{"token": "t0k3n", "topics": ["orders"]}]},
        "subscriptions": [{
            "name": "orders", "topics": ["orders"], "group": "orders-webhook",
            "url": "http://127.0.0.1:9000/kafka", "unix_socket": "",
            "secrets": [VALID_SECRET], "timeout_ms": 15000,
            "ordering": "partition", "max_in_flight": 64,
            "retry": {"initial_ms": 500, "max_ms": 60000, "max_attempts": 10,
                      "max_retry_after_ms": 300000},
            "dead_letter_topic": "orders.dlq", "on_exhausted": "block", "start": "earliest",
        }],
    }))

    res = ackd_proc.run("-n", "-c", conf)

    assert res.returncode == 0, res.stderr


def test_check_lists_every_error_with_file_and_line(tmp_path):
    conf = tmp_path / "broken.conf"
    text = numbered([
        'listen = {',
        '  http = "127.0.0.1:8470";',
        '};',
        'listn = { unix = "/tmp/x.sock"; };',
        'limits = {',
        '  max_body_bytes = -5;',
        '};',
        'kafka = {',
        '  brokers = "127.0.0.1:9092";',
        '};',
        'spool = {',
        f'  dir = "{tmp_path}";',
        '  fsync = "sometimes";',
        '};',
        'subscriptions = (',
        '  {',
        '    name = "orders";',
        '    topics = [ "bad topic!" ];',
        '    group = "orders-webhook";',
        '    url = "http://127.0.0.1:9000/kafka";',
        '    secrets = [ "whsec_not*base64!" ];',
        '  }',
        ');',
    ])
    conf.write_text(text)
    expected = {
        line_of(text, "listn"): ["listn"],
        line_of(text, "max_body_bytes"): ["max_body_bytes"],
        line_of(text, "sometimes"): ["fsync"],
        line_of(text, "bad topic!"): ["topic"],
        line_of(text, "whsec_not"): ["secret", "whsec", "base64"],
    }

    res = ackd_proc.run("-n", "-c", conf)

    assert res.returncode == 1
    found = reported(res.stderr + res.stdout, conf)
    assert sorted(found) == sorted(expected), res.stderr
    for line, words in expected.items():
        messages = " ".join(found[line]).lower()
        assert any(w in messages for w in words), (line, found[line])


def test_check_reports_a_syntax_error_with_its_line(tmp_path):
    conf = tmp_path / "syntax.conf"
    text = numbered([
        'kafka = {',
        '  brokers = "127.0.0.1:9092";',
        '};',
        'spool = { dir = ; };',
    ])
    conf.write_text(text)

    res = ackd_proc.run("-n", "-c", conf)

    assert res.returncode == 1
    assert list(reported(res.stderr + res.stdout, conf)) == [4], res.stderr


def test_check_reports_an_unreadable_file(tmp_path):
    missing = tmp_path / "no-such.conf"

    res = ackd_proc.run("-n", "-c", missing)

    assert res.returncode == 1
    assert str(missing) in res.stderr


# --- command line -------------------------------------------------------------

def test_version_flag_prints_ackd_and_librdkafka_versions():
    res = ackd_proc.run("-V")

    assert res.returncode == 0, res.stderr
    # The librdkafka ackd runs on (rd_kafka_version_str()): the system's.
    assert res.stdout == (f"ackd {ackd_proc.project_version()} "
                          f"(librdkafka {ackd_proc.system_librdkafka_version()})\n"), res.stdout


# --- shutdown -----------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_ackd_with_status_0_within_a_second(ackd, signum):
    daemon = ackd()

    started = time.monotonic()
    daemon.signal(signum)
    try:
        status = daemon.wait_exit(timeout=1.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ackd still running 1s after {signum.name}")

    assert status == 0
    assert time.monotonic() - started < 1.0


# --- the spool and the Unix socket ----------------------------------------------

def test_a_second_ackd_on_the_same_spool_fails_clearly(ackd):
    first = ackd()

    second = ackd(spool_dir=first.spool_dir, wait=False)
    status = second.wait_exit(timeout=10)

    assert status != 0
    assert str(first.spool_dir) in second.stderr_text()
    assert first.http.get("/healthz").status == 200


def test_a_stale_unix_socket_file_is_replaced(ackd, short_tmp):
    path = short_tmp / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))  # closed without unlink: a socket file nobody serves
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    daemon = ackd(unix_path=path)

    assert daemon.unix.get("/healthz").status == 200


def test_a_live_unix_socket_is_an_error(ackd, short_tmp):
    path = short_tmp / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)

        daemon = ackd(unix_path=path, wait=False)
        status = daemon.wait_exit(timeout=10)

        assert status != 0
        assert str(path) in daemon.stderr_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(path))  # still ours: ackd left the file alone
            conn, _ = listener.accept()
            conn.close()
