#!/bin/sh
# Check the systemd units as make install writes them: systemd-analyze verify
# must accept them without a word, and the service's exposure score must stay
# at or under 2.0 (it is 1.2 with systemd 252).
#
#   tests/systemd-verify.sh [BUILD_DIR]     (default: $ACKD_BUILD_DIR, else .)
#
# verify insists that ExecStart='s binaries exist, so @sbindir@ becomes the
# build directory, whose ackd is the binary make install would copy; the
# other substitutions are the ones Makefile.am makes. Needs no running
# systemd: verify and security --offline only read unit files.
set -eu

top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-${ACKD_BUILD_DIR:-.}}" && pwd)
analyze=${SYSTEMD_ANALYZE:-systemd-analyze}
max_exposure=20   # tenths, as --threshold counts

fail() {
	echo "systemd-verify: $*" >&2
	exit 1
}

command -v "$analyze" >/dev/null 2>&1 ||
	fail "$analyze not found: install the Debian package systemd"
[ -x "$build/ackd" ] || fail "no ackd in $build: build it first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

sed -e "s|@sbindir@|$build|g" -e 's|@sysconfdir@|/etc|g' \
	"$top_srcdir/systemd/ackd.service.in" >"$tmp/ackd.service"
cp "$top_srcdir/systemd/ackd.socket" "$tmp/ackd.socket"
if grep -n '@[a-z_]*@' "$tmp/ackd.service" >&2; then
	fail "ackd.service.in has a substitution Makefile.am does not make"
fi

# verify exits 0 on unknown keys and bad values, which it only logs.
"$analyze" verify --man=no "$tmp/ackd.service" "$tmp/ackd.socket" >"$tmp/verify.txt" 2>&1 ||
	{ cat "$tmp/verify.txt" >&2; fail "systemd-analyze verify failed"; }
if [ -s "$tmp/verify.txt" ]; then
	cat "$tmp/verify.txt" >&2
	fail "systemd-analyze verify has complaints"
fi

"$analyze" security --offline=true --threshold=$max_exposure "$tmp/ackd.service" \
	>"$tmp/security.txt" 2>&1 ||
	{ grep -e '✗' -e 'Overall' "$tmp/security.txt" >&2;
	  fail "exposure above $max_exposure tenths, or systemd-analyze security failed"; }
# sched_setattr is let through again (publish.slice_us), and no other call:
# the unit names it alone, and security finds it among @resources.
allowed=$(grep '^SystemCallFilter=[^~]' "$tmp/ackd.service" | tr '\n' ' ')
[ "$allowed" = "SystemCallFilter=@system-service SystemCallFilter=sched_setattr " ] ||
	fail "the unit's allowed system calls changed: $allowed"
grep -q 'SystemCallFilter=~@resources .*(e.g. sched_setattr is allowed)' "$tmp/security.txt" ||
	fail "systemd does not let sched_setattr through"
echo "units verified; $(grep 'Overall exposure' "$tmp/security.txt")"
