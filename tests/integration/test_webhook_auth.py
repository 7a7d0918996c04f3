"""Outbound authentication of webhook requests (docs/webhooks.md, "Webhook
authentication and TLS"): static headers, https with a CA and a client
certificate (mutual TLS), and OAuth 2.0 client credentials, against a real
Kafka broker and the in-process webhook sink.

Secrets must never reach the log: every test runs ackd with -d (debug) and
looks for its secrets in everything ackd wrote.
"""

import base64
import time
import json
import subprocess
import threading
import urllib.parse

import pytest

from kafka import wait_until
from test_webhook import (DELIVERY_TIMEOUT, end_offsets, new_topic, produce_all, start_ackd,
                          subscription, wait_committed)
from webhook_sink import Reply, WebhookSink


def assert_not_logged(daemon, *secrets):
    text = daemon.stderr_text()
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in ackd's log"


# --- static headers ----------------------------------------------------------

def test_static_headers_sent_and_never_logged(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    api_key = "k3y-6f1d2c9a-static-header"
    sub = subscription(topic, webhook_sink,
                       headers=[f"X-Api-Key={api_key}", "X-Tenant=blue team"])
    daemon = start_ackd(ackd, sub, config={"log": {"level": "debug"}})
    # the first answer is a 401: ackd logs the retry, with no header value
    webhook_sink.script("/hook", 401)
    produce_all(kafka, topic, [{"value": b"m0"}, {"value": b"m1"}])
    reqs = webhook_sink.wait_for(3, timeout=DELIVERY_TIMEOUT, path="/hook")
    for r in reqs:
        assert r.header("X-Api-Key") == api_key
        assert r.header("X-Tenant") == "blue team"
        assert len(r.headers.get_all("X-Api-Key")) == 1
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    assert_not_logged(daemon, api_key)


def test_header_ackd_sets_is_refused_at_start(ackd_bin, tmp_path):
    """A static header may not replace one of ackd's: file:line, no value."""
    conf = tmp_path / "ackd.conf"
    conf.write_text('kafka = { brokers = "127.0.0.1:9"; };\n'
                    'subscriptions = ( { name = "s"; topics = [ "t" ]; url = "http://h/";\n'
                    '  headers = [ "webhook-signature=v1,forged-9a8b7c" ]; } );\n')
    p = subprocess.run([ackd_bin, "-n", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0
    assert f"{conf}:3: subscriptions[0].headers: header webhook-signature is set by ackd " \
           "itself" in p.stderr
    assert "forged-9a8b7c" not in p.stderr + p.stdout


# --- TLS ---------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate it
    signed, and a second CA that signed nothing ackd is given."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=ackd test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "ackd-client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=d)
    return d


def peer_cn(req):
    return dict(x[0] for x in req.peer_cert["subject"])["commonName"]


def test_mutual_tls(kafka, ackd, pki):
    """https with ca_file, and the client certificate the endpoint requires."""
    with WebhookSink(tls=(pki / "server.pem", pki / "server.key", pki / "ca.pem")) as sink:
        topic = new_topic(kafka)
        sub = subscription(topic, sink, tls={"ca_file": str(pki / "ca.pem"),
                                             "cert_file": str(pki / "client.pem"),
                                             "key_file": str(pki / "client.key")})
        start_ackd(ackd, sub)
        produce_all(kafka, topic, [{"value": b"over tls"}])
        [req] = sink.wait_for(1, timeout=DELIVERY_TIMEOUT)
        assert sink.url().startswith("https://")
        assert req.body == b"over tls"
        assert peer_cn(req) == "ackd-client"
        wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))


@pytest.mark.parametrize("case", ["no client certificate", "CA not trusted"])
def test_tls_refused_is_retried_never_committed(kafka, ackd, pki, case):
    """Without the client certificate the endpoint refuses the handshake;
    with a CA that did not sign the server, ackd refuses it. Either way the
    message is retried and its offset stays uncommitted."""
    tls = {"ca_file": str(pki / "ca.pem")}
    if case == "CA not trusted":
        tls = {"ca_file": str(pki / "other-ca.pem"), "cert_file": str(pki / "client.pem"),
               "key_file": str(pki / "client.key")}
    with WebhookSink(tls=(pki / "server.pem", pki / "server.key", pki / "ca.pem")) as sink:
        topic = new_topic(kafka)
        sub = subscription(topic, sink, tls=tls, retry={"initial_ms": 100, "max_ms": 200})
        daemon = start_ackd(ackd, sub, config={"log": {"level": "debug"}})
        produce_all(kafka, topic, [{"value": b"m"}])
        wait_until(lambda: sink.handshake_failures >= 3, DELIVERY_TIMEOUT,
                   "refused handshakes")
        wait_until(lambda: " attempt 2: " in daemon.stderr_text(), 10, "a logged retry")
        assert sink.received() == []
        # Nothing, or 0: the group resumes at the message. A revoke (a slow
        # machine lets the group rebalance) commits where the partition
        # stands, which is before the message, never past it.
        assert kafka.committed(sub["group"], topic).get(0) in (None, -1001, 0)


# --- OAuth 2.0 client credentials ---------------------------------------------

class TokenServer:
    """A token endpoint (/token on the sink) and a webhook (/hook) that takes
    only the newest token it issued and answers 401 to anything else."""

    CLIENT_ID = "ackd-client"
    CLIENT_SECRET = "cl13nt-s3cret-4b5e"

    def __init__(self, sink, expires_in=3600):
        self.expires_in = expires_in
        self.issued = []          # every token handed out
        self.valid = None
        self.bad_requests = []    # token requests that were not as RFC 6749 says
        self._lock = threading.Lock()
        sink.respond("/token", self.token)
        sink.respond("/hook", self.hook)

    def token(self, req):
        auth = req.header("Authorization") or ""
        form = urllib.parse.parse_qs(req.body.decode())
        want = base64.b64encode(f"{self.CLIENT_ID}:{self.CLIENT_SECRET}".encode()).decode()
        if auth != f"Basic {want}" or form.get("grant_type") != ["client_credentials"] or \
                form.get("scope") != ["events:write audit"]:
            self.bad_requests.append((auth, form))
            return Reply(401, body=b'{"error":"invalid_client"}')
        with self._lock:
            tok = f"tok-{len(self.issued) + 1}-a7f3c9e1"
            self.issued.append(tok)
            self.valid = tok
        body = {"access_token": tok, "token_type": "Bearer", "expires_in": self.expires_in}
        return Reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def revoke(self):
        with self._lock:
            self.valid = None

    def hook(self, req):
        with self._lock:
            ok = self.valid is not None and req.header("Authorization") == f"Bearer {self.valid}"
        return 200 if ok else 401


def oauth2_sub(topic, sink):
    return subscription(topic, sink, oauth2={"token_url": sink.url("/token"),
                                             "client_id": TokenServer.CLIENT_ID,
                                             "client_secret": TokenServer.CLIENT_SECRET,
                                             "scope": "events:write audit"},
                        retry={"initial_ms": 100, "max_ms": 500})


def delivered(sink):
    return [r for r in sink.received("/hook") if r.status == 200]


def test_oauth2_token_fetched_once_and_cached(kafka, ackd, webhook_sink):
    tokens = TokenServer(webhook_sink)
    topic = new_topic(kafka)
    sub = oauth2_sub(topic, webhook_sink)
    daemon = start_ackd(ackd, sub, config={"log": {"level": "debug"}})
    produce_all(kafka, topic, [{"value": b"a%d" % i} for i in range(5)])
    wait_until(lambda: len(delivered(webhook_sink)) == 5, DELIVERY_TIMEOUT, "5 deliveries")
    produce_all(kafka, topic, [{"value": b"b%d" % i} for i in range(5)])
    wait_until(lambda: len(delivered(webhook_sink)) == 10, DELIVERY_TIMEOUT, "10 deliveries")
    assert tokens.bad_requests == []
    assert tokens.issued == ["tok-1-a7f3c9e1"]
    # the token came before the first delivery: no request went out without it
    assert all(r.header("Authorization") == "Bearer tok-1-a7f3c9e1"
               for r in webhook_sink.received("/hook"))
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    assert_not_logged(daemon, TokenServer.CLIENT_SECRET, "tok-1-a7f3c9e1")


def test_oauth2_401_fetches_a_new_token_and_retries(kafka, ackd, webhook_sink):
    tokens = TokenServer(webhook_sink)
    topic = new_topic(kafka)
    sub = oauth2_sub(topic, webhook_sink)
    daemon = start_ackd(ackd, sub, config={"log": {"level": "debug"}})
    produce_all(kafka, topic, [{"value": b"first"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 1, DELIVERY_TIMEOUT, "1 delivery")
    tokens.revoke()  # the endpoint stops taking tok-1 (revoked, rotated keys...)
    produce_all(kafka, topic, [{"value": b"second"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 2, DELIVERY_TIMEOUT, "2 deliveries")
    hooks = webhook_sink.received("/hook")
    second = [r for r in hooks if r.body == b"second"]
    assert [(r.status, r.header("Authorization"), r.header("ackd-attempt")) for r in second] \
        == [(401, "Bearer tok-1-a7f3c9e1", "1"), (200, "Bearer tok-2-a7f3c9e1", "2")]
    assert tokens.issued == ["tok-1-a7f3c9e1", "tok-2-a7f3c9e1"]
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    assert_not_logged(daemon, TokenServer.CLIENT_SECRET, "tok-1-a7f3c9e1", "tok-2-a7f3c9e1")


def test_oauth2_token_replaced_shortly_before_it_expires(kafka, ackd, webhook_sink):
    """expires_in 8 s: kept for 3 s (5 s early at least), then fetched anew
    before the next delivery, with no 401 on the way."""
    tokens = TokenServer(webhook_sink, expires_in=8)
    topic = new_topic(kafka)
    sub = oauth2_sub(topic, webhook_sink)
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"early"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 1, DELIVERY_TIMEOUT, "1 delivery")
    produce_all(kafka, topic, [{"value": b"still cached"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 2, DELIVERY_TIMEOUT, "2 deliveries")
    fetched = webhook_sink.received("/token")[0].started
    cached = [r for r in webhook_sink.received("/hook") if r.body == b"still cached"][0]
    if cached.started - fetched < 2.5:  # else this machine was too slow to tell
        assert cached.header("Authorization") == "Bearer tok-1-a7f3c9e1"
    wait_until(lambda: len(tokens.issued) == 1 and
               webhook_sink.received("/token")[0].started + 3.5 < time.monotonic(),
               10, "3.5 s after the first token")
    produce_all(kafka, topic, [{"value": b"late"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 3, DELIVERY_TIMEOUT, "3 deliveries")
    late = [r for r in webhook_sink.received("/hook") if r.body == b"late"]
    assert [(r.status, r.header("Authorization")) for r in late] == \
        [(200, "Bearer tok-2-a7f3c9e1")]
    assert all(r.status == 200 for r in webhook_sink.received("/hook"))


def test_oauth2_token_endpoint_down_retries_without_sending(kafka, ackd, webhook_sink):
    """No token, no request: the message waits, nothing goes out unauthenticated,
    the token endpoint is asked about once a second, and delivery resumes."""
    tokens = TokenServer(webhook_sink)
    webhook_sink.script("/token", *[503] * 3)
    topic = new_topic(kafka)
    sub = oauth2_sub(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"m"}])
    wait_until(lambda: len(delivered(webhook_sink)) == 1, DELIVERY_TIMEOUT, "1 delivery")
    token_reqs = webhook_sink.received("/token")
    assert [r.status for r in token_reqs] == [503, 503, 503, 200]
    gaps = [b.started - a.started for a, b in zip(token_reqs, token_reqs[1:])]
    assert min(gaps) >= 0.9, gaps
    assert [r.header("Authorization") for r in webhook_sink.received("/hook")] == \
        ["Bearer tok-1-a7f3c9e1"]
    assert "token endpoint answered 503" in daemon.stderr_text()
    assert_not_logged(daemon, TokenServer.CLIENT_SECRET)
