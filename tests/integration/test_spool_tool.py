"""ackd-spool(8), the offline spool tool, on real spools.

    fixtures      verify names each damage of tests/fixtures/spool/ by file,
                  offset and kind and exits 1; the clean one exits 0 with notes;
                  stat and dump give the numbers and records the fixtures hold;
                  none of them changes a byte
    daemon spool  ackd with Kafka unreachable spools what clients publish with
                  ack=spool: stat (while ackd runs: "in use"), verify and dump
                  show exactly what was published
    spares        segments begun in zero-filled spares (spool.prealloc): verify
                  notes the zeros while ackd runs and finds nothing after a
                  stop; after a kill -9 the restart cuts them, counts no torn
                  bytes and loses no record; with prealloc off no spare exists
    reinject      a message the (mock) cluster rejects lands in failed/;
                  reinject is refused while ackd runs, then moves it back as a
                  new record that ackd produces after a restart; a damaged
                  failed/ log is kept and nothing of it appended
    bad topics    a hand-written spool's records naming no possible topic
                  land in failed/ unsent; the records around them are produced

The fixtures are copied to a temporary directory first.
"""

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from ackd_proc import REPO, find_spool_tool
from kafka import wait_until

FIXTURES = REPO / "tests" / "fixtures" / "spool"
TS0 = 1700000000000  # make-fixtures.py: record i was accepted at TS0 + i
UNREACHABLE = "127.0.0.1:1"


def tool(*args):
    return subprocess.run([str(find_spool_tool()), *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


def seg(first, ext="spool"):
    return f"seg-{first:020d}.{ext}"


def fixture(tmp_path, case):
    dst = tmp_path / case
    shutil.copytree(FIXTURES / case, dst)
    return dst


def digest(root):
    """Every file under root with the hash of its bytes and its mode."""
    root = Path(root)
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- what make-fixtures.py writes -------------------------------------------------

def rec_size(seq):
    """Bytes of fixture record seq: header, then the payload of docs/spool-format.md."""
    key, rid, value = b"k%d" % seq, b"id-%d" % seq, b"value-%d" % seq
    payload = 8 + 4 + 2 + 1 + 4 + len(key) + 4 + 2 + len(b"ackd-id") + 4 + len(rid) \
        + 4 + len(value)
    return 28 + payload


def rec_off(first, seq):
    """File offset of record seq in a fixture segment starting at first."""
    return 40 + sum(rec_size(s) for s in range(first, seq))


def fixture_record(seq, acked=False):
    return {"seq": seq, "topic": "t", "partition": 0, "key": f"k{seq}",
            "value": f"value-{seq}", "headers": [{"name": "ackd-id", "value": f"id-{seq}"}],
            "timestamp": TS0 + seq, "acked": acked}


# --- reading the tool's output --------------------------------------------------------

SEG_LINE = re.compile(r"^segment (\S+): seq (\S+) (sealed|active|unsealed) records (\d+) "
                      r"acked (\d+) bytes (\d+)")


def stat(spool):
    r = tool("stat", spool)
    assert r.returncode == 0, r
    out = {"segs": {}}
    for line in r.stdout.splitlines():
        m = SEG_LINE.match(line)
        if m:
            out["segs"][m[1]] = {"seq": m[2], "state": m[3], "records": int(m[4]),
                                     "acked": int(m[5]), "bytes": int(m[6])}
            continue
        name, _, value = line.partition(": ")
        out[name] = value
    assert int(out["segments"]) == len(out["segs"]), r.stdout
    out["unacked"] = int(out["unacked records"])
    out["bytes"] = int(out["bytes"])
    oldest = re.search(r"\((\d+)\)$", out["oldest accept time"])
    out["oldest_ms"] = int(oldest[1]) if oldest else None
    failed = re.match(r"(\d+) in (\d+) files", out["failed records"])
    out["failed"], out["failed_files"] = int(failed[1]), int(failed[2])
    return out


def problems(stdout):
    """(file, offset or None, kind) of each problem line of verify."""
    found = []
    for line in stdout.splitlines():
        if re.search(r": (damaged|clean): ", line):
            continue  # the summary
        m = re.match(r"^(\S+): offset (\d+): ([a-z-]+): ", line)
        if m:
            found.append((m[1], int(m[2]), m[3]))
            continue
        m = re.match(r"^(\S+): ([a-z-]+): ", line)
        if m and m[2] != "note":
            found.append((m[1], None, m[2]))
    return found


def dump(spool, *flags):
    r = tool("dump", spool, *flags)
    assert r.returncode == 0, r
    return [json.loads(line) for line in r.stdout.splitlines()]


# --- fixtures -----------------------------------------------------------------------

DAMAGE = {
    "bad-footer": [(seg(1), rec_off(1, 11), "bad-footer")],
    "bad-hdr-crc": [(seg(1), rec_off(1, 3), "bad-header-crc"),
                    (seg(11), rec_off(11, 14), "bad-header-crc")],
    "bad-payload-crc": [(seg(1), rec_off(1, 4), "bad-payload-crc"),
                        (seg(11), rec_off(11, 15), "bad-payload-crc")],
    "torn-tail": [(seg(1), rec_off(1, 11), "torn-tail")],
    "truncated-ack": [(seg(1, "ack"), 3 * 12, "ack-partial-entry")],
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_verify_names_each_damage_and_exits_1_without_changing_a_byte(tmp_path, case):
    spool = fixture(tmp_path, case)
    before = digest(spool)
    r = tool("verify", spool)
    assert r.returncode == 1, r
    assert problems(r.stdout) == DAMAGE[case], r.stdout
    assert r.stdout.splitlines()[-1].startswith(f"{spool}: damaged: {len(DAMAGE[case])} problems")
    for args in (("stat",), ("dump",), ("dump", "--all"), ("dump", "--failed")):
        tool(*args[:1], spool, *args[1:])
    assert digest(spool) == before, "a read-only command changed the spool"
    assert not (spool / "lock").exists() and not (spool / "failed").exists()


def test_verify_notes_zeros_after_the_records_as_unused_space_not_damage(tmp_path):
    """A file that ends in zeros after its last record (a preallocated
    segment's unused end, or a write whose size reached the disk and its data
    not) holds no record: ackd cuts them without counting them torn."""
    spool = fixture(tmp_path, "zero-tail")
    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert f"{seg(1)}: note: 4096 zero bytes after the records at offset {rec_off(1, 11)} " \
        "(unused space of a preallocated segment; ackd cuts them at start-up)" in r.stdout, r


def test_verify_exits_0_on_a_clean_spool_and_notes_what_ackd_tolerates(tmp_path):
    spool = fixture(tmp_path, "missing-segment")
    r = tool("verify", spool)
    assert r.returncode == 0, r
    assert problems(r.stdout) == []
    notes = [line for line in r.stdout.splitlines() if ": note: " in line]
    assert notes == [
        f"{seg(11)}: note: sequences 6-10 are in no segment (deleted once acknowledged)",
        "notes.txt: note: not a spool file (ackd ignores it)",
        f"{seg(6, 'ack')}: note: acknowledgements of a deleted segment (ackd removes the file)",
    ], r.stdout
    assert r.stdout.splitlines()[-1] == \
        f"{spool}: clean: 2 segments and 0 failed/ logs verified"


def test_stat_counts_segments_acks_and_the_oldest_record(tmp_path):
    s = stat(fixture(tmp_path, "truncated-ack"))
    assert s["lock"].startswith("free")
    assert s["segs"] == {seg(1): {"seq": "1-10", "state": "active", "records": 10,
                                      "acked": 3, "bytes": rec_off(1, 11)}}
    assert (s["unacked"], s["bytes"], s["oldest_ms"]) == (7, rec_off(1, 11), TS0 + 4)
    assert (s["failed"], s["failed_files"]) == (0, 0)

    s = stat(fixture(tmp_path, "missing-segment"))
    assert s["segs"] == {
        seg(1): {"seq": "1-5", "state": "sealed", "records": 5, "acked": 0,
                 "bytes": rec_off(1, 6) + 68},
        seg(11): {"seq": "11-15", "state": "active", "records": 5, "acked": 0,
                  "bytes": rec_off(11, 16)}}
    assert (s["unacked"], s["oldest_ms"]) == (10, TS0 + 1)


def test_dump_prints_the_unacknowledged_records_and_all_with_all(tmp_path):
    spool = fixture(tmp_path, "truncated-ack")
    assert dump(spool) == [fixture_record(s) for s in range(4, 11)]
    assert dump(spool, "--all") == [fixture_record(s, acked=s <= 3) for s in range(1, 11)]
    assert dump(spool, "--failed") == []

    # Damaged records are skipped, each with a warning; the rest still come.
    spool = fixture(tmp_path, "bad-payload-crc")
    r = tool("dump", spool)
    assert r.returncode == 0, r
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == \
        [s for s in range(1, 21) if s not in (4, 15)]
    assert r.stderr.count("bad payload crc") == 2, r.stderr


def test_usage_errors_exit_2(tmp_path):
    assert tool().returncode == 2
    assert tool("stat", tmp_path / "nonexistent").returncode == 2
    assert tool("frobnicate", tmp_path).returncode == 2
    assert tool("dump", tmp_path, "--all", "--failed").returncode == 2


# --- a spool written by ackd ---------------------------------------------------------

def b64(b):
    return base64.b64encode(b).decode()


def test_a_spool_written_by_ackd_shows_exactly_what_was_published(ackd):
    daemon = ackd(brokers=UNREACHABLE)
    spool = daemon.spool_dir
    t0 = int(time.time() * 1000)
    answers = []
    r = daemon.http.post("/v1/topics/orders?ack=spool&key=k%C3%A9y&partition=3",
                         body="héllo wörld".encode(),
                         headers={"Content-Type": "text/plain", "Kafka-Header-Trace": "abc"})
    answers.append(r)
    r = daemon.http.post("/v1/topics/orders?ack=spool", body=b"\x00\xff\xfe binary")
    answers.append(r)
    r = daemon.http.post("/v1/topics/empty.one?ack=spool&key=", body=b"")
    answers.append(r)
    for r in answers:
        assert r.status == 202, (r.status, r.body)
    batch = {"records": [{"key_b64": b64(b"\xff\x00"), "value": {"a": [1, 2]},
                          "headers": {"h": "v", "n": "ünï"}},
                         {"value_b64": b64(b"\xc3\x28"), "partition": 0}]}
    r = daemon.http.post("/v1/topics/batched/records?ack=spool", body=batch)
    assert r.status == 202, (r.status, r.body)
    t1 = int(time.time() * 1000)
    ids = [a.json()["id"] for a in answers] + [e["id"] for e in r.json()["results"]]

    expected = [
        {"topic": "orders", "partition": 3, "key": "kéy", "value": "héllo wörld",
         "headers": {"content-type": "text/plain", "trace": "abc"}},
        {"topic": "orders", "partition": None, "key": None, "value_b64": b64(b"\x00\xff\xfe binary"),
         "headers": {}},
        {"topic": "empty.one", "partition": None, "key": "", "value": "", "headers": {}},
        {"topic": "batched", "partition": None, "key_b64": b64(b"\xff\x00"),
         "value": '{"a":[1,2]}', "headers": {"h": "v", "n": "ünï"}},
        {"topic": "batched", "partition": 0, "key": None, "value_b64": b64(b"\xc3\x28"),
         "headers": {}},
    ]

    # While ackd runs: read-only, and said so.
    s = stat(spool)
    assert s["lock"].startswith("in use by a running ackd"), s
    assert (s["unacked"], s["failed"]) == (5, 0), s
    assert t0 <= s["oldest_ms"] <= t1
    r = tool("verify", spool)
    assert r.returncode == 0, r
    assert "in use by a running ackd" in r.stdout

    daemon.stop()
    s = stat(spool)
    assert s["lock"].startswith("free"), s
    [(name, info)] = s["segs"].items()
    assert info == {"seq": "1-5", "state": "active", "records": 5, "acked": 0,
                    "bytes": (spool / name).stat().st_size}
    assert (s["unacked"], s["bytes"]) == (5, (spool / name).stat().st_size)

    lines = dump(spool)
    assert [d["seq"] for d in lines] == [1, 2, 3, 4, 5]
    for d, want, ackd_id in zip(lines, expected, ids):
        headers = {h["name"]: h["value"] for h in d["headers"]}
        assert len(headers) == len(d["headers"]), d
        assert headers.pop("ackd-id") == ackd_id
        got = {k: v for k, v in d.items() if k not in ("seq", "timestamp", "acked")}
        got["headers"] = headers
        assert got == want
        assert t0 <= d["timestamp"] <= t1 and d["acked"] is False
    assert dump(spool, "--all") == lines

    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert r.stdout.splitlines()[-1] == f"{spool}: clean: 1 segments and 0 failed/ logs verified"


# --- zero-filled spare segments (spool.prealloc) ----------------------------------------

SPARE = ".seg-spare.tmp"
SEG_BYTES = 131072  # max_bytes 1 MiB: segments of an eighth


def segments(spool):
    return sorted(spool.glob("seg-*.spool"))


def spare_size(spool):
    try:
        return (spool / SPARE).stat().st_size
    except FileNotFoundError:
        return None


def publish_until_rolled_into_spares(daemon, rolls):
    """Batches of 1 KiB values until `rolls` new segments were begun in a
    spare. ackd asks for a spare at its segment's first group (these
    segments, 128 KiB, are under the 1 MiB the zeros may run ahead of the
    records, so it is written whole at once); while one is being written, the next batch waits for it (a roll that beats the
    spare's last fdatasync creates the segment empty and does not count).
    Returns the records sent."""
    spool, sent, spares = daemon.spool_dir, 0, 0
    while spares < rolls:
        if spare_size(spool) not in (None, SEG_BYTES):
            wait_until(lambda: spare_size(spool) == SEG_BYTES, 10, "the spare written")
            time.sleep(0.3)  # its last fdatasync and the hand-over
        before = len(segments(spool))
        r = daemon.http.post("/v1/topics/spares/records?ack=spool",
                             body={"records": [{"value": "v" * 1000}] * 20})
        assert r.status == 202, (r.status, r.body)
        sent += 20
        spares += len(segments(spool)) > before and \
            segments(spool)[-1].stat().st_size == SEG_BYTES
    return sent


def test_spare_segments_are_written_over_and_cut_at_stop_and_after_a_crash(ackd):
    daemon = ackd(brokers=UNREACHABLE, config={"spool": {"max_bytes": 1048576}})
    spool = daemon.spool_dir
    sent = publish_until_rolled_into_spares(daemon, 2)
    newest = segments(spool)[-1]
    assert newest.stat().st_size == SEG_BYTES  # a spare, its records over the zeros

    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert f"{newest.name}: note:" in r.stdout and "zero bytes after the records" in r.stdout, r
    assert stat(spool)["unacked"] == sent

    daemon.kill9()
    daemon.start()
    assert re.search(rf"segment \d+: \d+ zero bytes after offset \d+ \(unused space\) cut off",
                     daemon.stderr_text()), daemon.stderr_text()[-2000:]
    assert "torn tail" not in daemon.stderr_text()
    assert "ackd_spool_torn_bytes 0" in daemon.http.get("/metrics").body.decode()
    assert newest.stat().st_size < SEG_BYTES
    sent += publish_until_rolled_into_spares(daemon, 1)
    daemon.stop()

    assert not (spool / SPARE).exists()
    assert segments(spool)[-1].stat().st_size < SEG_BYTES
    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert "zero bytes" not in r.stdout, r
    assert stat(spool)["unacked"] == sent
    assert len(dump(spool)) == sent

    off = ackd(brokers=UNREACHABLE, spool_dir=spool,
               config={"spool": {"max_bytes": 1048576, "prealloc": False}})
    for _ in range(10):
        r = off.http.post("/v1/topics/spares/records?ack=spool",
                          body={"records": [{"value": "v" * 1000}] * 20})
        assert r.status == 202, (r.status, r.body)
    assert not (spool / SPARE).exists()
    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert "zero bytes" not in r.stdout, r
    off.stop()
    assert stat(spool)["unacked"] == sent + 200


# --- failed/ and reinject --------------------------------------------------------------

def reject_one(mock, daemon, topic):
    """Publish a message that the mock cluster rejects permanently; returns its answer."""
    mock.push_errors("Produce", *["MSG_SIZE_TOO_LARGE"] * 4)
    r = daemon.http.post(f"/v1/topics/{topic}?ack=kafka&key=kk", body=b"rejected \xff",
                         headers={"Kafka-Header-X": "y"})
    mock.clear_errors("Produce")
    return r


def test_reinject_moves_failed_records_back_and_ackd_produces_them(mock_kafka, ackd, tmp_path):
    mock = mock_kafka
    topic = "rej"
    mock.create_topic(topic, partitions=1, rf=3)
    daemon = ackd(brokers=mock.bootstrap)
    spool = daemon.spool_dir
    r = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"fine")
    assert r.status == 200, r.body
    r = reject_one(mock, daemon, topic)
    assert r.status == 413, (r.status, r.body)
    failed_files = sorted((spool / "failed").iterdir())
    assert len(failed_files) == 1
    failed_before = failed_files[0].read_bytes()

    # A running ackd owns the spool: reinject refuses and touches nothing.
    r = tool("reinject", spool)
    assert r.returncode == 1, r
    assert f"{spool} is in use by a running ackd" in r.stderr
    assert "stop ackd first" in r.stderr
    assert failed_files[0].read_bytes() == failed_before
    daemon.stop()

    s = stat(spool)
    assert (s["unacked"], s["failed"], s["failed_files"]) == (0, 1, 1), s
    [f] = dump(spool, "--failed")
    assert "Message size too large" in f.pop("reason")
    ackd_id = {h["name"]: h["value"] for h in f["headers"]}["ackd-id"]
    accepted = f.pop("timestamp")
    assert f == {"seq": 2, "topic": topic, "partition": None, "key": "kk",
                 "value_b64": b64(b"rejected \xff"),
                 "headers": [{"name": "x", "value": "y"}, {"name": "ackd-id", "value": ackd_id}]}
    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r
    assert "1 segments and 1 failed/ logs verified" in r.stdout

    # A damaged failed/ log is kept whole and nothing of it reaches the spool.
    broken = tmp_path / "broken"
    shutil.copytree(spool, broken)
    log = broken / "failed" / failed_files[0].name
    data = bytearray(log.read_bytes())
    data[-3] ^= 0x5A
    log.write_bytes(bytes(data))
    r = tool("reinject", broken)
    assert r.returncode == 1, r
    assert "damaged, file kept" in r.stderr
    assert "reinjected 0 records from 0 of 1 failed/ files" in r.stdout
    assert log.read_bytes() == bytes(data)
    assert stat(broken)["unacked"] == 0

    # A torn tail (a crash in the middle of an append) is cut when the spool
    # opens, and the whole records are reinjected.
    torn = tmp_path / "torn"
    shutil.copytree(spool, torn)
    log = torn / "failed" / failed_files[0].name
    whole = log.read_bytes()
    log.write_bytes(whole + whole[40:70])
    r = tool("reinject", torn)
    assert r.returncode == 0, r
    assert r.stdout == "reinjected 1 records from 1 of 1 failed/ files\n"
    assert list((torn / "failed").iterdir()) == []
    assert stat(torn)["unacked"] == 1

    r = tool("reinject", spool)
    assert r.returncode == 0, r
    assert r.stdout == "reinjected 1 records from 1 of 1 failed/ files\n"
    assert list((spool / "failed").iterdir()) == []
    s = stat(spool)
    assert (s["unacked"], s["failed"], s["oldest_ms"]) == (1, 0, accepted), s
    [d] = dump(spool)
    assert d == {"seq": 3, "topic": topic, "partition": None, "key": "kk",
                 "value_b64": b64(b"rejected \xff"),
                 "headers": [{"name": "x", "value": "y"}, {"name": "ackd-id", "value": ackd_id}],
                 "timestamp": accepted, "acked": False}
    r = tool("verify", spool)
    assert (r.returncode, problems(r.stdout)) == (0, []), r

    # ackd produces the reinjected record like any other.
    daemon.start()
    wait_until(lambda: tool("stat", spool).stdout.count("unacked records: 0") == 1, 30,
               "the reinjected record acknowledged by the cluster")
    records = mock.read_topic(topic)
    assert sorted(rec.value for rec in records) == [b"fine", b"rejected \xff"]
    again = next(rec for rec in records if rec.value == b"rejected \xff")
    assert again.key == b"kk"
    assert again.header("ackd-id") == ackd_id.encode()
    assert again.header("ackd-failed-reason") is None


def test_reinject_keeps_the_idempotency_keys_of_the_segments_it_deletes(mock_kafka, ackd):
    """Opening the spool deletes the last run's segment once Kafka acknowledged
    all of it. Its Idempotency-Keys go to the keys file first, as when ackd
    deletes a segment, so a client repeating its request after the restart
    gets a replay, not a second message."""
    mock = mock_kafka
    topic = "rejkeys"
    mock.create_topic(topic, partitions=1, rf=3)
    daemon = ackd(brokers=mock.bootstrap)
    spool = daemon.spool_dir
    key = {"Idempotency-Key": "order-1"}
    first = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"once", headers=key)
    assert first.status == 200, first.body
    r = reject_one(mock, daemon, topic)
    assert r.status == 413, (r.status, r.body)
    daemon.stop()

    r = tool("reinject", spool)
    assert r.returncode == 0, r
    [d] = dump(spool, "--all")  # the first run's segment is gone, its keys saved
    assert d["value_b64"] == b64(b"rejected \xff"), d

    daemon.start()
    again = daemon.http.post(f"/v1/topics/{topic}?ack=kafka", body=b"once", headers=key)
    assert again.status == 200, again.body
    assert again.header("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    wait_until(lambda: tool("stat", spool).stdout.count("unacked records: 0") == 1, 30,
               "the reinjected record acknowledged by the cluster")
    assert sorted(rec.value for rec in mock.read_topic(topic)) == [b"once", b"rejected \xff"]


def fixture_writer():
    """tests/fixtures/spool/make-fixtures.py as a module: its record encoder."""
    spec = importlib.util.spec_from_file_location("make_fixtures",
                                                  FIXTURES / "make-fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def message(mk, seq, topic, value, partition=0):
    """A record of spool sequence seq, written by hand with mk (fixture_writer()):
    no key, one header ackd-id "id-SEQ"."""
    payload = struct.pack("<qiH", mk.TS0 + seq, partition, len(topic)) + topic
    payload += struct.pack("<I", 0xFFFFFFFF)  # no key
    rid = b"id-%d" % seq
    payload += struct.pack("<IH", 1, 7) + b"ackd-id" + struct.pack("<I", len(rid)) + rid
    payload += struct.pack("<I", len(value)) + value
    return mk.record(seq, payload=payload)


def test_a_record_naming_no_valid_topic_goes_to_failed_and_the_rest_is_produced(mock_kafka,
                                                                                ackd, tmp_path):
    """Publishing checks topic names, so only a spool written by hand holds a
    record naming no possible topic: empty, 256 bytes or more, or a NUL inside (at
    which librdkafka would cut the name, sending the record to another
    topic). Such a record goes to failed/, as Kafka would refuse it; the
    records around it are produced."""
    mk = fixture_writer()
    mock = mock_kafka
    mock.create_topic("t", partitions=1, rf=3)

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / seg(1)).write_bytes(mk.seg_header(1) + message(mk, 1, b"t", b"before")
                                 + message(mk, 2, b"a" * 256, b"long")
                                 + message(mk, 3, b"t\x00x", b"nul")
                                 + message(mk, 4, b"", b"empty")
                                 + message(mk, 5, b"t", b"after"))
    daemon = ackd(brokers=mock.bootstrap, spool_dir=spool)
    wait_until(lambda: "unacked records: 0" in tool("stat", spool).stdout, 30,
               "every record acknowledged or failed")
    daemon.stop()
    log = daemon.stderr_text()
    assert "record 2 names no possible topic (256 bytes); not sent" in log
    assert "record 3 names no possible topic (3 bytes, a NUL in them); not sent" in log
    assert "record 4 names no possible topic (0 bytes); not sent" in log
    # Filed without a name: a part of it cut at the NUL would name topic "t".
    assert "record 3 rejected permanently (Broker: Invalid topic); moved to failed/" in log
    assert "by kafka" not in log  # ackd refused these, Kafka never saw them
    assert sorted(rec.value for rec in mock.read_topic("t")) == [b"after", b"before"]
    failed = dump(spool, "--failed")
    assert [(f["seq"], f["topic"], f["reason"]) for f in failed] == [
        (2, "a" * 256, "Broker: Invalid topic"), (3, "t\x00x", "Broker: Invalid topic"),
        (4, "", "Broker: Invalid topic")]


@pytest.mark.parametrize("rtt_ms", [0, 1200], ids=["answered", "slow"])
def test_a_record_for_a_partition_the_topic_lacks_goes_to_failed_after_kafka_is_asked(
        mock_kafka, ackd, tmp_path, rtt_ms):
    """Partitions can be added while ackd runs, so a record for a partition
    its producer does not know is held while Kafka is asked; it goes to
    failed/ only once Kafka has said for 10 s that the topic has no such
    partition (here a spool written by hand names partition 5 of a topic with
    one). The records around it are produced. A cluster slower than the first
    question's 0.5 s (every answer 1.2 s late) gets longer questions, and the
    record is still filed: it does not hold everything for good."""
    mk = fixture_writer()
    mock = mock_kafka
    mock.create_topic("t", partitions=1, rf=3)
    for broker in (1, 2, 3):
        mock.set_rtt(broker, rtt_ms)

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / seg(1)).write_bytes(mk.seg_header(1) + message(mk, 1, b"t", b"before")
                                 + message(mk, 2, b"t", b"nowhere", partition=5)
                                 + message(mk, 3, b"t", b"after"))
    started = time.monotonic()
    daemon = ackd(brokers=mock.bootstrap, spool_dir=spool)
    wait_until(lambda: "unacked records: 0" in tool("stat", spool).stdout, 90,
               "every record acknowledged or failed")
    took = time.monotonic() - started
    daemon.stop()
    log = daemon.stderr_text()
    assert ("producer: topic t: Kafka says the topic has 1 partitions, so none numbered 5; "
            "records for it are refused once it has said so for 10 s") in log, log
    silent = ("producer: topic t: partition 5 is not in the producer's metadata, and Kafka "
              "did not answer within 500 ms; holding the record, asking again every 5 s")
    assert (silent in log) == (rtt_ms > 500), log
    assert "record 2 to t rejected permanently (Local: Unknown partition); moved to failed/" \
        in log, log
    assert took >= 10, took
    assert sorted(rec.value for rec in mock.read_topic("t")) == [b"after", b"before"]
    failed = dump(spool, "--failed")
    assert [(f["seq"], f["topic"], f["reason"]) for f in failed] == [
        (2, "t", "Local: Unknown partition")]
