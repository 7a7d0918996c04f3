#!/bin/bash
# Fetch the Apache Kafka broker jars used by the integration tests.
#
#     fetch-kafka.sh           the suite's broker (kafka.version in pom.xml)
#     fetch-kafka.sh compat    the older broker of the matrix (kafka.compat.version)
#
# Copies org.apache.kafka:kafka_2.13 (version pinned in pom.xml) and its
# runtime dependencies into $ACKD_KAFKA_CACHE/<version>/libs (default cache:
# ${XDG_CACHE_HOME:-~/.cache}/ackd-test-kafka). Runs Maven only when that
# directory does not hold the broker jar yet. Prints the libs directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pom="$here/pom.xml"
case "${1:-}" in
"") property=kafka.version ;;
compat) property=kafka.compat.version ;;
*) echo "usage: fetch-kafka.sh [compat]" >&2; exit 2 ;;
esac
version=$(sed -n "s:.*<$property>\\(.*\\)</$property>.*:\\1:p" "$pom")
[ -n "$version" ] || { echo "fetch-kafka: no $property in $pom" >&2; exit 1; }

cache=${ACKD_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ackd-test-kafka}
libs="$cache/$version/libs"
stamp="$cache/$version/complete"

if [ -f "$stamp" ] && [ -f "$libs/kafka_2.13-$version.jar" ]; then
	echo "$libs"
	exit 0
fi

command -v mvn >/dev/null || { echo "fetch-kafka: mvn not found (Debian package maven)" >&2; exit 1; }

echo "fetch-kafka: downloading Apache Kafka $version into $libs" >&2
tmp="$cache/$version/libs.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp"
mvn -B -q -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
	-Dkafka.version="$version" -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
[ -f "$tmp/kafka_2.13-$version.jar" ] || {
	echo "fetch-kafka: maven did not produce kafka_2.13-$version.jar" >&2
	exit 1
}
rm -rf "$libs"
mv "$tmp" "$libs"
touch "$stamp"
echo "fetch-kafka: $(ls "$libs" | wc -l) jars in $libs" >&2
echo "$libs"
