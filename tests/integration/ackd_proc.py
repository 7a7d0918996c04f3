"""The ackd binary under test: locate it, write its config, run and stop it.

    a = Ackd(find_ackd(), brokers="127.0.0.1:9092").start()
    a.http.get("/healthz"); a.unix.get("/healthz")
    a.kill9(); a.restart()          # the same config, ports and spool
    a.close()

ACKD_TEST_HTTP_CLIENT=libcurl in the environment gives every subscription
that does not name its http_client that one, so a whole run of the webhook
tests goes through libcurl instead of ackd's own HTTP client.

A service manager's view (tests/integration/test_systemd.py):

    Ackd(..., env={"NOTIFY_SOCKET": path, "WATCHDOG_PID": None},
         pass_fds=[fd], wrapper=[...])
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from httpclient import HttpClient

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT = 20
STOP_TIMEOUT = 10
RUN_TIMEOUT = 20


def build_dir():
    return Path(os.environ.get("ACKD_BUILD_DIR") or REPO / "build").resolve()


def _first_executable(candidates, what):
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"{what} not found (tried {tried}): build with scripts/test "
                            f"or set ACKD_BUILD_DIR")


def find_ackd():
    """ACKD_BIN, else ackd in ACKD_BUILD_DIR (default build/), else an in-tree build."""
    if os.environ.get("ACKD_BIN"):
        return _first_executable([Path(os.environ["ACKD_BIN"]).resolve()], "ACKD_BIN")
    return _first_executable([build_dir() / "ackd", REPO / "build" / "ackd", REPO / "ackd"],
                             "the ackd binary")


def find_mock():
    """ACKD_MOCK_BIN, else tests/mock/ackd-mock in the build directory."""
    if os.environ.get("ACKD_MOCK_BIN"):
        return _first_executable([Path(os.environ["ACKD_MOCK_BIN"]).resolve()],
                                 "ACKD_MOCK_BIN")
    rel = Path("tests") / "mock" / "ackd-mock"
    return _first_executable([build_dir() / rel, REPO / "build" / rel, REPO / rel],
                             "ackd-mock (built by make check)")


def find_spool_tool():
    """ACKD_SPOOL_BIN, else ackd-spool next to ackd in the build directory."""
    if os.environ.get("ACKD_SPOOL_BIN"):
        return _first_executable([Path(os.environ["ACKD_SPOOL_BIN"]).resolve()],
                                 "ACKD_SPOOL_BIN")
    return _first_executable([build_dir() / "ackd-spool", REPO / "build" / "ackd-spool",
                              REPO / "ackd-spool"], "the ackd-spool binary")


def system_librdkafka_version():
    """The system's librdkafka, which ackd links (the tests' Python client
    carries its own)."""
    return subprocess.run(["pkg-config", "--modversion", "rdkafka"], check=True,
                          capture_output=True, text=True).stdout.strip()


def project_version():
    """The version in configure.ac's AC_INIT."""
    text = (REPO / "configure.ac").read_text()
    m = re.search(r"AC_INIT\(\[[^]]*\],\s*\[([^]]+)\]", text)
    if m is None:
        raise ValueError("no version in configure.ac AC_INIT")
    return m.group(1)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, timeout=RUN_TIMEOUT, binary=None):
    """Run ackd with args to completion; returns CompletedProcess (text)."""
    binary = binary or find_ackd()
    return subprocess.run([str(binary), *map(str, args)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


# --- libconfig ---------------------------------------------------------------

def libconfig_string(s):
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# Settings that hold groups: written as libconfig lists "( )" even when empty.
GROUP_LISTS = {"subscriptions", "tokens"}


def libconfig_value(value, indent="", key=None):
    """libconfig text for a Python value: dict = group, list of dicts = list,
    other list = array."""
    inner = indent + "  "
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}L" if not -2**31 <= value < 2**31 else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return libconfig_string(value)
    if isinstance(value, dict):
        body = "".join(f"{inner}{k} = {libconfig_value(v, inner, k)};\n"
                       for k, v in value.items())
        return "{\n" + body + indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "( )" if key in GROUP_LISTS else "[ ]"
        if all(isinstance(v, dict) for v in value):
            items = ",\n".join(inner + libconfig_value(v, inner) for v in value)
            return "(\n" + items + "\n" + indent + ")"
        return "[ " + ", ".join(libconfig_value(v, inner) for v in value) + " ]"
    raise TypeError(f"no libconfig form for {type(value).__name__}: {value!r}")


def render_libconfig(settings):
    """A whole config file from a dict of top-level settings."""
    return "".join(f"{k} = {libconfig_value(v, '', k)};\n" for k, v in settings.items())


def merge(base, overrides):
    """base updated by overrides, recursively for dicts; a None value deletes."""
    out = dict(base)
    for key, value in (overrides or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def with_http_client(sub):
    """sub with http_client from ACKD_TEST_HTTP_CLIENT, unless it names one."""
    forced = os.environ.get("ACKD_TEST_HTTP_CLIENT")
    if not forced or not isinstance(sub, dict) or "http_client" in sub:
        return sub
    return {**sub, "http_client": forced}


# --- the daemon --------------------------------------------------------------

class Ackd:
    """One ackd process with its own directory, config, ports and spool."""

    def __init__(self, binary, brokers, config=None, subscriptions=None, args=(),
                 spool_dir=None, unix_path=None, name="ackd", env=None, pass_fds=(),
                 wrapper=()):
        """env: variables set for ackd on top of this process's (None removes
        one); pass_fds: descriptors ackd inherits; wrapper: argv run in front
        of ackd's, which must exec ackd with the arguments it is given."""
        self.binary = Path(binary)
        self.env = dict(env or {})
        self.pass_fds = tuple(pass_fds)
        self.wrapper = [str(w) for w in wrapper]
        self.name = name
        # Short paths: a Unix socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="ackd-t"))
        self.spool_dir = Path(spool_dir) if spool_dir else self.dir / "spool"
        self.unix_path = Path(unix_path) if unix_path else self.dir / "ackd.sock"
        self.http_port = free_port()
        self.config_path = self.dir / "ackd.conf"
        self.stderr_path = self.dir / "stderr.log"
        self.args = list(args)
        self.proc = None
        self._stderr_kept = ""
        settings = {
            "listen": {"http": f"127.0.0.1:{self.http_port}", "unix": str(self.unix_path)},
            "kafka": {"brokers": brokers},
            "spool": {"dir": str(self.spool_dir)},
        }
        if subscriptions is not None:
            settings["subscriptions"] = list(subscriptions)
        self.settings = merge(settings, config)
        self.write_config()

    def write_config(self):
        settings = self.settings
        if isinstance(settings.get("subscriptions"), list):
            settings = {**settings,
                        "subscriptions": [with_http_client(s) for s in settings["subscriptions"]]}
        self.config_path.write_text(render_libconfig(settings))

    @property
    def http(self):
        return HttpClient(port=self.http_port)

    @property
    def unix(self):
        return HttpClient(unix_path=str(self.unix_path))

    def listeners(self):
        """A client per enabled listener (TCP first)."""
        listen = self.settings.get("listen", {})
        out = []
        if listen.get("http"):
            out.append(self.http)
        if listen.get("unix"):
            out.append(self.unix)
        return out

    # --- process ---------------------------------------------------------

    def start(self, wait=True, timeout=START_TIMEOUT):
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        environ = None
        if self.env:
            environ = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([*self.wrapper, str(self.binary), "-c",
                                          str(self.config_path), *self.args],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=environ, pass_fds=self.pass_fds)
        if wait:
            self.wait_healthy(timeout)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                               f"{self.stderr_text()}")

    def healthy(self):
        """GET /healthz answers 200 on the first enabled listener."""
        clients = self.listeners()
        if not clients:
            return self.running()
        try:
            return clients[0].get("/healthz", timeout=1).status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: GET /healthz not 200 after {timeout}s:\n"
                                   f"{self.stderr_text()}")
            time.sleep(0.05)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """The exit status; raises TimeoutExpired when still running."""
        return self.proc.wait(timeout=timeout)

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit status. Kills and raises when ackd
        does not exit within timeout."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise RuntimeError(f"{self.name} did not exit within {timeout}s of SIGTERM")

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def restart(self, wait=True, timeout=START_TIMEOUT):
        """Stop (SIGTERM) if running, start again with the same config and spool."""
        self.stop()
        return self.start(wait=wait, timeout=timeout)

    def stderr_text(self):
        if self.stderr_path.exists():
            return self.stderr_path.read_text(errors="replace")
        return self._stderr_kept

    def close(self):
        """Stop ackd (SIGTERM, SIGKILL after the timeout) and remove its directory.
        Raises when ackd needed SIGKILL."""
        try:
            self.stop()
        finally:
            self._stderr_kept = self.stderr_text()
            shutil.rmtree(self.dir, ignore_errors=True)
