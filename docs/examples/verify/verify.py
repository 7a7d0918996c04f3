#!/usr/bin/env python3
"""Verify an ackd (Standard Webhooks) webhook signature.

usage: verify.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE
Exits 0 when one of the signatures is valid and the timestamp is within
5 minutes of now (VERIFY_NOW=unix-seconds replaces the clock), 1 otherwise.
"""
import base64
import hashlib
import hmac
import os
import sys
import time

TOLERANCE_S = 5 * 60


def verify(secret, msg_id, timestamp, body, signature_header, now):
    # The timestamp is signed, so a replayed request is caught by its age.
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False

    # The key is the base64 after "whsec_"; ackd may omit the padding.
    key = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    key = base64.b64decode(key + "=" * (-len(key) % 4))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())

    # One "v1,<base64>" entry per secret, separated by spaces.
    for entry in signature_header.split():
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return True
    return False


def main(argv):
    if len(argv) != 6:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    secret, msg_id, timestamp, body_path, signature_header = argv[1:]
    if body_path == "-":
        body = sys.stdin.buffer.read()
    else:
        with open(body_path, "rb") as f:
            body = f.read()
    now = int(os.environ.get("VERIFY_NOW") or time.time())
    if verify(secret, msg_id, timestamp, body, signature_header, now):
        print("valid")
        return 0
    print("invalid signature or timestamp", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
