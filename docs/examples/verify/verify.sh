#!/bin/sh
# Verify an ackd (Standard Webhooks) webhook signature with openssl.
#
# usage: verify.sh SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE
# Exits 0 when one of the signatures is valid and the timestamp is within
# 5 minutes of now (VERIFY_NOW=unix-seconds replaces the clock), 1 otherwise.
set -eu

if [ $# -ne 5 ]; then
	echo "usage: verify.sh SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE" >&2
	exit 2
fi
secret=$1 id=$2 ts=$3 body=$4 header=$5
tolerance=300

# The timestamp is signed, so a replayed request is caught by its age.
case $ts in '' | *[!0-9]*) echo "bad timestamp" >&2; exit 1 ;; esac
now=${VERIFY_NOW:-$(date +%s)}
age=$((now - ts))
if [ "$age" -gt "$tolerance" ] || [ "$age" -lt "-$tolerance" ]; then
	echo "timestamp outside the tolerance" >&2
	exit 1
fi

# The key is the base64 after "whsec_", as hex for openssl (it may hold any
# byte); ackd may omit the base64 padding.
key=${secret#whsec_}
while [ $((${#key} % 4)) -ne 0 ]; do key="$key="; done
hexkey=$(printf '%s' "$key" | base64 -d | od -An -v -tx1 | tr -d ' \n')

# HMAC-SHA256 over "{id}.{timestamp}.{body}", the body byte for byte.
hmac() { openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary; }
expected=$({ printf '%s.%s.' "$id" "$ts"; cat -- "$body"; } | hmac "$hexkey" | base64)

# Compare HMACs of both strings under a random key: the time the shell's
# comparison takes then tells an attacker nothing about the signature.
nonce=$(openssl rand -hex 32)
want=$(printf '%s' "$expected" | hmac "$nonce" | base64)

# One "v1,<base64>" entry per secret, separated by spaces (set -f: no
# file name expansion of the words).
set -f
for entry in $header; do
	case $entry in
	v1,*)
		got=$(printf '%s' "${entry#v1,}" | hmac "$nonce" | base64)
		if [ "$got" = "$want" ]; then
			echo valid
			exit 0
		fi
		;;
	esac
done
echo "invalid signature" >&2
exit 1
