"""The signature verification examples of docs/webhooks.md.

Each example under docs/examples/verify/ (Python, Node.js, Go, shell) runs
against the Standard Webhooks test vector, which must verify, and against
tampered input, which must not. The code blocks in docs/webhooks.md must be
the example files byte for byte, so the document cannot drift from the code
that these tests run.

Needs python3, node, go and openssl; none of them is optional here. The Go
example is built with `go run` and a temporary GOCACHE; it uses the standard
library only, so nothing is downloaded.
"""

import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "webhooks.md"
EXAMPLES = REPO / "docs" / "examples" / "verify"

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

LANGUAGES = ["python", "node", "go", "shell"]
FILES = {"python": "verify.py", "node": "verify.js", "go": "verify.go", "shell": "verify.sh"}


def sign(secret, msg_id, timestamp, body):
    """The reference signature, computed here independently of the examples."""
    key = secret[len("whsec_"):]
    key = base64.b64decode(key + "=" * (-len(key) % 4))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def tool(name, fallback=None):
    path = shutil.which(name) or (fallback if fallback and os.access(fallback, os.X_OK) else None)
    if not path:
        pytest.fail(f"{name} is not installed; the docs examples need it")
    return path


@pytest.fixture(scope="module")
def go_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("go")
    env = dict(os.environ)
    for var in ("GOFLAGS", "GO111MODULE", "GOWORK"):
        env.pop(var, None)
    env.update(GOCACHE=str(base / "cache"), GOPATH=str(base / "path"), GOTOOLCHAIN="local",
               GOPROXY="off", HOME=str(base))
    return env, base


@pytest.fixture
def run(go_env, tmp_path):
    """run(language, secret, id, timestamp, body, header, now=TIMESTAMP, stdin=False)
    -> CompletedProcess. now=None leaves the example on the real clock."""

    def runner(language, secret, msg_id, timestamp, body, header, now=TIMESTAMP, stdin=False):
        example = EXAMPLES / FILES[language]
        env = dict(os.environ)
        cwd = tmp_path
        if language == "python":
            cmd = [sys.executable, str(example)]
        elif language == "node":
            cmd = [tool("node"), str(example)]
        elif language == "go":
            env, cwd = go_env
            env = dict(env)
            cmd = [tool("go", "/usr/local/go/bin/go"), "run", str(example)]
        else:
            tool("openssl")
            cmd = ["/bin/sh", str(example)]
        env.pop("VERIFY_NOW", None)
        if now is not None:
            env["VERIFY_NOW"] = str(now)
        if stdin:
            body_arg, data = "-", body
        else:
            body_file = tmp_path / "body"
            body_file.write_bytes(body)
            body_arg, data = str(body_file), b""
        return subprocess.run(cmd + [secret, msg_id, str(timestamp), body_arg, header],
                              input=data, capture_output=True, env=env, cwd=cwd, timeout=300)

    return runner


def explain(p):
    return f"exit {p.returncode}\nstdout: {p.stdout.decode(errors='replace')}\n" \
           f"stderr: {p.stderr.decode(errors='replace')}"


def test_reference_signature_matches_the_vector():
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_vector_is_valid(run, language, stdin):
    p = run(language, SECRET, MSG_ID, TIMESTAMP, BODY, SIGNATURE, stdin=stdin)
    assert p.returncode == 0, explain(p)
    assert p.stdout.strip() == b"valid", explain(p)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_tampered_body_is_invalid(run, language, stdin):
    p = run(language, SECRET, MSG_ID, TIMESTAMP, b'{"test": 2432232315}', SIGNATURE, stdin=stdin)
    assert p.returncode == 1, explain(p)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("what", ["id", "timestamp", "secret", "signature", "version"])
def test_other_tampering_is_invalid(run, language, what):
    msg_id, ts, secret, header = MSG_ID, TIMESTAMP, SECRET, SIGNATURE
    if what == "id":
        msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJeK"
    elif what == "timestamp":
        ts = TIMESTAMP + 1
    elif what == "secret":
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"
    elif what == "signature":
        header = SIGNATURE[:-2] + "Q="
    else:
        header = "v2," + SIGNATURE[3:]
    p = run(language, secret, msg_id, ts, BODY, header, now=ts)
    assert p.returncode == 1, explain(p)


@pytest.mark.parametrize("language", LANGUAGES)
def test_any_of_several_signatures(run, language):
    """Secret rotation: one space-separated entry per secret, either may match."""
    other = sign("whsec_" + base64.b64encode(b"another secret, 24 bytes").decode(),
                 MSG_ID, TIMESTAMP, BODY)
    for header in (f"{other} {SIGNATURE}", f"{SIGNATURE} {other}"):
        p = run(language, SECRET, MSG_ID, TIMESTAMP, BODY, header)
        assert p.returncode == 0, explain(p)
    p = run(language, SECRET, MSG_ID, TIMESTAMP, BODY, f"{other} v1,AAAA")
    assert p.returncode == 1, explain(p)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("now,valid", [
    (TIMESTAMP + 300, True), (TIMESTAMP - 300, True),
    (TIMESTAMP + 301, False), (TIMESTAMP - 301, False), (None, False),
], ids=["300s-late", "300s-early", "301s-late", "301s-early", "real-clock"])
def test_timestamp_tolerance(run, language, now, valid):
    p = run(language, SECRET, MSG_ID, TIMESTAMP, BODY, SIGNATURE, now=now)
    assert p.returncode == (0 if valid else 1), explain(p)


@pytest.mark.parametrize("language", LANGUAGES)
def test_binary_body_and_unpadded_secret(run, language):
    """A 32-byte secret whose base64 is written without padding (ackd accepts
    it), and a body that is not UTF-8 and ends in a newline."""
    secret = "whsec_" + base64.b64encode(bytes(range(200, 232))).decode().rstrip("=")
    body = bytes(range(256)) + b"\r\n\n"
    header = sign(secret, MSG_ID, TIMESTAMP, body)
    p = run(language, secret, MSG_ID, TIMESTAMP, body, header, stdin=True)
    assert p.returncode == 0, explain(p)
    p = run(language, secret, MSG_ID, TIMESTAMP, body[:-1], header, stdin=True)
    assert p.returncode == 1, explain(p)


def fenced_blocks(text):
    """The contents of the ``` fenced code blocks of a Markdown text."""
    return [m.group(1) for m in re.finditer(r"^```[^\n`]*\n(.*?)^```[ \t]*$", text,
                                            re.MULTILINE | re.DOTALL)]


@pytest.mark.parametrize("language", LANGUAGES)
def test_doc_shows_the_example_verbatim(language):
    blocks = fenced_blocks(DOC.read_text())
    source = (EXAMPLES / FILES[language]).read_text()
    assert source in blocks, \
        f"docs/webhooks.md has no code block equal to docs/examples/verify/{FILES[language]}"


def test_doc_blocks_that_look_like_examples_are_examples():
    """A block that defines a verify function must be one of the files."""
    sources = {(EXAMPLES / f).read_text() for f in FILES.values()}
    for block in fenced_blocks(DOC.read_text()):
        if re.search(r"^(def|function|func) verify\(", block, re.MULTILINE) or "hmac" in block:
            assert block in sources, f"a code block in docs/webhooks.md is no example file:\n{block}"
