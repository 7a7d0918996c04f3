"""The Debian package (debian/, scripts/package): built, installed, run,
upgraded over a spool, and purged.

    build        scripts/package builds version X from this tree (lintian
                 warnings and errors fail it) and X+1 from a copy with a
                 local changelog entry; once per session, with
                 DEB_BUILD_OPTIONS=nocheck since the suite runs make check
                 itself
    contents     dpkg -x into a throwaway root: the files where Debian
                 keeps them, the conffile, the dependency on the librdkafka
                 it was built against, loopback-only defaults
    install      dpkg -i on this machine: the user, the permissions, the
                 enabled service, ackd -n on the installed config,
                 systemd-analyze verify and security --offline on the
                 installed units; the installed ackd, run as the user ackd,
                 delivers what is published through its socket
    upgrade      a message spooled by X (Kafka unreachable) is delivered by
                 X+1 after dpkg -i X+1 over X; the edited conffile is kept;
                 the maintainer scripts restart the service, never stop it
    purge        dpkg --purge leaves none of the package's files, no spool,
                 no enablement symlinks; only the user ackd stays (Debian
                 does not remove system users)

The machine's PID 1 is not systemd here (see ps -p 1), so ackd.service
cannot really run: the test runs the installed /usr/sbin/ackd by hand the
way the unit does (user ackd, umask 0077, /run/ackd as RuntimeDirectory=)
against the harness's Kafka. What the maintainer scripts ask of systemd is
recorded instead: dpkg runs in a private mount namespace where
/run/systemd/system exists (so the scripts believe systemd runs), where a
container's /usr/sbin/policy-rc.d (Docker's says "exit 101": start nothing)
is replaced by one that allows, as on a host without one, and where
systemctl is a stand-in that logs its arguments.

Installing needs root and a machine without an ackd package of its own; the
test refuses to touch an ackd that it did not install.
"""

import grp
import gzip
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ackd_proc import REPO, free_port, project_version
from httpclient import HttpClient
from kafka import wait_until

BUILD_TIMEOUT = 600
DPKG_TIMEOUT = 120
CONF = Path("/etc/ackd/ackd.conf")
SPOOL = Path("/var/lib/ackd")
RUNDIR = Path("/run/ackd")
SOCKET = RUNDIR / "ackd.sock"
UNITDIR = Path("/lib/systemd/system")
UNREACHABLE = "127.0.0.1:1"
POLICY_RC_D = "/usr/sbin/policy-rc.d"

# Stands in for systemctl while dpkg runs (see the module docstring): logs
# each call; passes on what works on files alone (--root=, as
# deb-systemd-helper enables units with "systemctl --root=/ preset"); says
# every unit is enabled, and succeeds.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case " $* " in
*" --root="*) exec /bin/systemctl "$@" ;;
*" --version "*) echo "systemd 252 (252)" ;;
*" is-enabled "*) echo enabled ;;
esac
exit 0
"""


def run(*args, timeout=60, check=True, **kwargs):
    r = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout, **kwargs)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}:\n"
                             f"{r.stdout}\n{r.stderr}")
    return r


def package(source, out):
    """scripts/package of tree source into out; returns the .deb's path."""
    env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck"}
    r = run(source / "scripts" / "package", "-o", out, timeout=BUILD_TIMEOUT, env=env)
    deb = Path(r.stdout.strip().splitlines()[-1])
    assert deb.is_file(), r.stdout
    return deb


def copy_tree(dst):
    """This tree without its build directory, git data and caches."""
    anywhere = shutil.ignore_patterns("__pycache__", ".pytest_cache", "autom4te.cache")

    def ignore(directory, names):
        skip = set(anywhere(directory, names))
        if Path(directory) == REPO:
            skip |= {"build", ".git", ".cache"} & set(names)
        return skip

    shutil.copytree(REPO, dst, ignore=ignore, symlinks=True)


def deb_field(deb, field):
    return run("dpkg-deb", "-f", deb, field).stdout.strip()


def status(name="ackd"):
    """dpkg's status of a package ("" when dpkg knows nothing of it)."""
    r = run("dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", name, check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    """{"old": .deb of this tree's version, "new": .deb of a version above it}."""
    out = tmp_path_factory.mktemp("debs")
    old = package(REPO, out / "old")
    src = tmp_path_factory.mktemp("next") / "ackd"
    copy_tree(src)
    env = {**os.environ, "DEBEMAIL": "maintainers@users.noreply.r-seed-da2d3402.example",
           "DEBFULLNAME": "ackd maintainers"}
    run("dch", "--local", "+next", "--distribution", "unstable", "--force-distribution",
        "Test upgrade: the same tree as the next version.", cwd=src, env=env)
    new = package(src, out / "new")
    return {"old": old, "new": new}


class Dpkg:
    """dpkg on this machine, with maintainer scripts that see a running
    systemd (a private mount namespace with /run/systemd/system) and a
    systemctl that logs instead of acting."""

    def __init__(self, workdir):
        self.bin = workdir / "fakebin"
        self.bin.mkdir()
        fake = self.bin / "systemctl"
        fake.write_text(FAKE_SYSTEMCTL)
        fake.chmod(0o755)
        self.log = workdir / "systemctl.log"
        self.allow = workdir / "policy-rc.d"
        self.allow.write_text("#!/bin/sh\nexit 0\n")
        self.allow.chmod(0o755)

    def __call__(self, *args):
        self.log.write_text("")
        script = ('mkdir -p /run/systemd && mount -t tmpfs ackd-test /run/systemd && '
                  'mkdir /run/systemd/system && '
                  f'{{ ! [ -e {POLICY_RC_D} ] || mount --bind {self.allow} {POLICY_RC_D}; }} && '
                  'exec dpkg "$@"')
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
               "SYSTEMCTL_LOG": str(self.log), "DEBIAN_FRONTEND": "noninteractive"}
        run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "dpkg",
            "--force-confold", *args, timeout=DPKG_TIMEOUT, env=env)
        return self.systemctl_calls()

    def systemctl_calls(self):
        """What the maintainer scripts asked of systemctl, as one string per call."""
        return [line.replace("--quiet ", "").replace("--system ", "")
                for line in self.log.read_text().splitlines()
                if "--version" not in line and "list-units" not in line
                and "--root=" not in line]


@pytest.fixture(scope="module")
def machine(tmp_path_factory, debs):
    """Installs version X on this machine; purges it at the end."""
    if os.geteuid() != 0:
        pytest.fail("installing the package needs root (scripts/test runs as root)",
                    pytrace=False)
    if status():
        pytest.fail(f"an ackd package is already on this machine ({status()}); this test "
                    f"installs and purges its own: remove it first (dpkg --purge ackd)",
                    pytrace=False)
    work = tmp_path_factory.mktemp("machine")
    dpkg = Dpkg(work)
    calls = dpkg("-i", debs["old"])
    yield {"dpkg": dpkg, "install_calls": calls}
    if status():
        dpkg("--purge", "ackd")


def set_conf(**values):
    """Edit /etc/ackd/ackd.conf in place as an administrator would; values
    are the string settings brokers= and http= (within their groups)."""
    text = CONF.read_text()
    for key, value in values.items():
        text, n = re.subn(rf'^(\s*{key}\s*=\s*)"[^"]*"', rf'\g<1>"{value}"', text, count=1,
                          flags=re.M)
        assert n == 1, f"no {key} in {CONF}"
    CONF.write_text(text)


class InstalledAckd:
    """/usr/sbin/ackd -c /etc/ackd/ackd.conf as ackd.service runs it:
    user and group ackd, umask 0077, /run/ackd made as RuntimeDirectory= makes it."""

    def __init__(self, log_dir):
        self.log_path = log_dir / f"ackd-{time.monotonic_ns()}.log"
        self.proc = None

    def start(self):
        user = pwd.getpwnam("ackd")
        RUNDIR.mkdir(mode=0o755, exist_ok=True)
        os.chown(RUNDIR, user.pw_uid, user.pw_gid)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["setpriv", "--reuid=ackd", "--regid=ackd", "--init-groups",
                 "/usr/sbin/ackd", "-c", str(CONF)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, umask=0o077,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        client = HttpClient(unix_path=str(SOCKET), timeout=2)

        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"installed ackd exited {self.proc.returncode}:\n"
                                     f"{self.log()}")
            try:
                return client.get("/healthz").status == 200
            except OSError:
                return False

        wait_until(healthy, 20, "installed ackd's /healthz on /run/ackd/ackd.sock")
        return HttpClient(unix_path=str(SOCKET), timeout=30)

    def stop(self):
        """SIGTERM, as systemctl stop sends it; ackd exits 0."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"installed ackd ignored SIGTERM:\n{self.log()}")
        assert code == 0, f"installed ackd exited {code} on SIGTERM:\n{self.log()}"

    def log(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def installed_ackd(tmp_path):
    started = []

    def make():
        daemon = InstalledAckd(tmp_path)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


def spool_dump(*args):
    """ackd-spool dump of the installed spool, as the user ackd, one dict per record."""
    r = run("setpriv", "--reuid=ackd", "--regid=ackd", "--init-groups",
            "/usr/bin/ackd-spool", "dump", SPOOL, *args)
    return [json.loads(line) for line in r.stdout.splitlines()]


# --- the .deb -------------------------------------------------------------------

def test_the_deb_holds_the_daemon_tool_units_user_conffile_and_docs(debs, tmp_path):
    deb = debs["old"]
    version = project_version()
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert deb.name == f"ackd_{version}_{arch}.deb"
    root = tmp_path / "root"
    run("dpkg-deb", "-x", deb, root)

    for path in ("usr/sbin/ackd", "usr/bin/ackd-spool"):
        mode = (root / path).stat().st_mode
        assert stat.S_ISREG(mode) and mode & 0o777 == 0o755, path
    assert not (root / "usr/sbin/ackd-spool").exists()
    for path in ("lib/systemd/system/ackd.service", "lib/systemd/system/ackd.socket",
                 "usr/lib/sysusers.d/ackd.conf", "etc/ackd/ackd.conf",
                 "usr/share/man/man8/ackd.8.gz", "usr/share/man/man8/ackd-spool.8.gz",
                 "usr/share/man/man5/ackd.conf.5.gz", "usr/share/doc/ackd/copyright",
                 "usr/share/doc/ackd/README.md.gz", "usr/share/doc/ackd/operations.md.gz",
                 "usr/share/doc/ackd/spool-format.md.gz"):
        assert (root / path).is_file(), path

    # The files are this tree's: the unit names the installed paths, the
    # sysusers.d line and the configuration are the source's.
    unit = (root / "lib/systemd/system/ackd.service").read_text()
    assert "ExecStart=/usr/sbin/ackd -c /etc/ackd/ackd.conf\n" in unit
    assert "ExecStartPre=/usr/sbin/ackd -n -c /etc/ackd/ackd.conf\n" in unit
    assert (root / "usr/lib/sysusers.d/ackd.conf").read_text() == \
        (REPO / "systemd/ackd.sysusers").read_text()
    conf = (root / "etc/ackd/ackd.conf").read_text()
    assert conf == (REPO / "config/ackd.conf").read_text()
    assert gzip.decompress((root / "usr/share/man/man8/ackd.8.gz").read_bytes()) == \
        (REPO / "docs/ackd.8").read_bytes()

    # Safe defaults: loopback and the Unix socket only, a broker a fresh
    # install can start with, no tokens needed.
    assert re.search(r'^\s*http = "127\.0\.0\.1:8470";', conf, re.M)
    assert re.search(r'^\s*unix = "/run/ackd/ackd\.sock";', conf, re.M)
    assert re.search(r'^\s*brokers = "localhost:9092";', conf, re.M)

    ctrl = tmp_path / "ctrl"
    run("dpkg-deb", "-e", deb, ctrl)
    assert (ctrl / "conffiles").read_text().split() == ["/etc/ackd/ackd.conf"]

    # At least the librdkafka it was built against.
    built = run("pkg-config", "--modversion", "rdkafka").stdout.strip()
    depends = deb_field(deb, "Depends")
    assert f"librdkafka1 (>= {built})" in depends, depends
    assert "systemd | systemd-standalone-sysusers" in depends, depends


def test_the_next_version_is_above_this_one(debs):
    old, new = deb_field(debs["old"], "Version"), deb_field(debs["new"], "Version")
    assert old == project_version()
    run("dpkg", "--compare-versions", new, "gt", old)


# --- on the machine ------------------------------------------------------------

def test_install_creates_the_user_and_enables_and_starts_the_service(machine):
    assert status() == "ii " + project_version()
    user = pwd.getpwnam("ackd")
    assert user.pw_dir == "/var/lib/ackd"
    assert user.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert user.pw_uid < 1000
    assert grp.getgrgid(user.pw_gid).gr_name == "ackd"

    st = CONF.stat()
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == \
        (0, "ackd", 0o640)
    st = SPOOL.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (user.pw_uid, user.pw_gid, 0o700)

    # Enabled at boot; the socket unit is left to the administrator.
    wants = Path("/etc/systemd/system/multi-user.target.wants/ackd.service")
    assert wants.is_symlink() and os.readlink(wants) == str(UNITDIR / "ackd.service")
    assert not Path("/etc/systemd/system/sockets.target.wants/ackd.socket").exists()
    assert "start ackd.service" in machine["install_calls"], machine["install_calls"]
    assert not any("ackd.socket" in c and "is-" not in c for c in machine["install_calls"])


def test_installed_config_checks_and_units_verify(machine):
    # As root and as the service's user (ExecStartPre runs as ackd).
    r = run("/usr/sbin/ackd", "-n", "-c", CONF)
    assert r.returncode == 0
    run("setpriv", "--reuid=ackd", "--regid=ackd", "--init-groups",
        "/usr/sbin/ackd", "-n", "-c", CONF)

    # --man=yes: the Documentation= pages must be installed and found.
    r = run("systemd-analyze", "verify", "--man=yes", UNITDIR / "ackd.service",
            UNITDIR / "ackd.socket", check=False)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    r = run("systemd-analyze", "security", "--offline=true", "--threshold=20",
            UNITDIR / "ackd.service", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Overall exposure level for ackd\.service: (\d+\.\d+) (\S+)", r.stdout)
    assert m and float(m[1]) <= 2.0, r.stdout


def test_installed_ackd_delivers_through_its_socket(machine, kafka, installed_ackd):
    topic = f"pkg-{time.monotonic_ns()}"
    kafka.create_topic(topic)
    # An administrator points the conffile at the cluster; a free port for
    # listen.http keeps clear of anything else on this machine.
    set_conf(brokers=kafka.bootstrap, http=f"127.0.0.1:{free_port()}")
    daemon = installed_ackd()
    client = daemon.start()
    resp = client.post(f"/v1/topics/{topic}?key=k1", body="from the package")
    assert resp.status == 200, (resp.status, resp.body)
    answer = resp.json()
    assert answer["status"] == "delivered", answer
    records = kafka.read_topic(topic)
    assert [(r.key, r.value) for r in records] == [(b"k1", b"from the package")]
    assert records[0].header("ackd-id").decode() == answer["id"]
    st = SOCKET.stat()  # listen.unix_mode; ackd removes the socket when it stops
    assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == ("ackd", 0o660)
    daemon.stop()


def test_upgrade_delivers_what_the_old_version_spooled(machine, debs, kafka, installed_ackd):
    dpkg = machine["dpkg"]
    topic = f"pkg-upgrade-{time.monotonic_ns()}"
    kafka.create_topic(topic)
    set_conf(brokers=UNREACHABLE, http=f"127.0.0.1:{free_port()}")

    # Version X spools a message it cannot deliver, and is stopped.
    old = installed_ackd()
    client = old.start()
    resp = client.post(f"/v1/topics/{topic}?ack=spool&key=k1", body="across the upgrade")
    assert resp.status == 202, (resp.status, resp.body)  # durable in the spool
    answer = resp.json()
    assert answer["status"] == "spooled", answer
    old.stop()
    pending = spool_dump()
    assert [(r["topic"], r["value"]) for r in pending] == [(topic, "across the upgrade")]

    # X+1 over X. The edited conffile is kept; the service is restarted by
    # the postinst, and the prerm of X does not stop it for an upgrade.
    conf_before = CONF.read_text()
    calls = dpkg("-i", debs["new"])
    assert status() == "ii " + deb_field(debs["new"], "Version")
    assert CONF.read_text() == conf_before
    assert "restart ackd.service" in calls, calls
    assert not any(c.startswith("stop") for c in calls), calls
    st = CONF.stat()
    assert (grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == ("ackd", 0o640)

    # X+1's tool reads X's spool (the format's version rule), and X+1's
    # daemon delivers the message once Kafka is there.
    assert [(r["topic"], r["value"]) for r in spool_dump()] == [(topic, "across the upgrade")]
    set_conf(brokers=kafka.bootstrap)
    new = installed_ackd()
    new.start()

    def delivered():
        return [r for r in kafka.read_topic(topic)
                if r.header("ackd-id") == answer["id"].encode()]

    wait_until(delivered, 30, "the message spooled by the old version in Kafka")
    (record,) = delivered()
    assert (record.key, record.value) == (b"k1", b"across the upgrade")
    wait_until(lambda: spool_dump() == [], 15, "the spool to drain")
    new.stop()


def test_purge_leaves_only_the_user(machine, debs):
    dpkg = machine["dpkg"]
    listing = run("dpkg-deb", "-c", debs["new"]).stdout
    names = [line.split(None, 5)[5].split(" -> ")[0] for line in listing.splitlines()]
    files = [Path(name.lstrip(".")) for name in names if not name.endswith("/")]
    assert len(files) > 20 and all(p.exists() for p in files)

    calls = dpkg("--purge", "ackd")
    assert status() == ""
    assert "stop ackd.service" in calls and "stop ackd.socket" in calls, calls
    left = [p for p in files if p.exists() or p.is_symlink()]
    assert left == []
    for path in (Path("/etc/ackd"), SPOOL, RUNDIR, Path("/usr/share/doc/ackd"),
                 Path("/etc/systemd/system/multi-user.target.wants/ackd.service")):
        assert not path.exists() and not path.is_symlink(), path
    helper_state = Path("/var/lib/systemd/deb-systemd-helper-enabled")
    assert [p for p in helper_state.rglob("*ackd*")] == []
    assert run("dpkg-statoverride", "--list", CONF, check=False).returncode != 0
    pwd.getpwnam("ackd")  # the user stays, as Debian leaves system users
