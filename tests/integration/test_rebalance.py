"""Rebalancing a consumer group of ackd instances while messages flow.

Three ackd instances share one subscription group on a topic of 12
partitions; 10,000 messages are produced at a steady rate while a fourth
instance joins and then one of the first three is killed (SIGKILL). Each
instance posts to its own path of one webhook sink, so every arrival says
which instance delivered which partition and offset, and when.

From the arrivals:

- nothing is skipped: every offset of every partition got a 2xx;
- a partition that did not change owner in a rebalance kept being
  delivered through it: no gap longer than MAX_GAP_S in its arrivals
  while the rebalance ran (with the eager assignor every partition stopped);
- only partitions that moved are delivered twice (the requests in flight
  when they left, and for the killed instance what it had not committed).

With a slow endpoint (some answers take SLOW_S seconds) the instances
that keep partitions do not wait for the slow requests of the partitions
that leave. (With a fast endpoint an eager rebalance is over in about 0.1 s
on loopback, so the slow case is the one where the eager assignor fails:
every partition stopped for about SLOW_S.)
"""

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from kafka import wait_until
from webhook_sink import Reply

PARTITIONS = 12
MESSAGES = 10_000
RATE = 300            # messages a second
MAX_GAP_S = 2.0       # between two arrivals of a partition that did not move
SLOW_S = 4.0
SLOW_EVERY = 97       # offsets that are a multiple of this answer after SLOW_S


def produce_steadily(bootstrap, topic, done, sent):
    """Produce MESSAGES at RATE; sent[p] gets the wall time of each send to p."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    t0 = time.monotonic()
    for i in range(MESSAGES):
        sent.setdefault(i % PARTITIONS, []).append(time.time())
        producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
        producer.poll(0)
        ahead = t0 + i / RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(30)
    done.set()


def owners(arrivals, t_from, t_to):
    """{partition: instances that delivered it between t_from and t_to}."""
    out = {}
    for a in arrivals:
        if t_from <= a["t"] < t_to:
            out.setdefault(a["p"], set()).add(a["who"])
    return out


def max_gap(times, t_from, t_to):
    """The longest time in [t_from, t_to] without an arrival."""
    edges = [t_from] + sorted(t for t in times if t_from <= t <= t_to) + [t_to]
    return max(b - a for a, b in zip(edges, edges[1:]))


@pytest.mark.parametrize("slow", [False, True], ids=["fast-endpoint", "slow-endpoint"])
def test_a_rebalance_moves_only_the_partitions_that_change_owner(ackd, kafka, webhook_sink,
                                                                 slow):
    sink = webhook_sink
    topic = f"rebalance-{uuid.uuid4().hex[:12]}"
    group = f"grp-{topic}"
    kafka.create_topic(topic, partitions=PARTITIONS)

    def respond(req):
        if slow and int(req.header("ackd-offset")) % SLOW_EVERY == 0:
            return Reply(200, delay=SLOW_S)
        return Reply(200)

    names = ["a", "b", "c", "d"]
    for name in names:
        sink.respond(f"/hook/{name}", respond)

    def start(name):
        sub = {"name": "rb", "topics": [topic], "group": group,
               "url": sink.url(f"/hook/{name}"), "timeout_ms": 10000,
               "ordering": "none" if slow else "partition", "max_in_flight": 32}
        return ackd(subscriptions=[sub],
                    config={"kafka": {"consumer": ["session.timeout.ms=6000",
                                                   "heartbeat.interval.ms=500"]}})

    def assigned(daemon):
        r = daemon.http.get("/v1/status")
        return r.json()["subscriptions"][0]["assigned_partitions"] if r.status == 200 else -1

    def shared():
        counts = [assigned(d) for d in daemons.values()]
        return sum(counts) == PARTITIONS and min(counts) > 0

    daemons = {name: start(name) for name in names[:3]}
    wait_until(shared, 60, "the three instances to share the partitions")

    produced = threading.Event()
    sent = {}
    producer = threading.Thread(target=produce_steadily,
                                args=(kafka.bootstrap, topic, produced, sent), daemon=True)
    producer.start()

    # A fourth instance joins.
    time.sleep(5)
    t_join = time.time()
    daemons["d"] = start("d")
    wait_until(lambda: sink.received("/hook/d"), 30, "the new instance to deliver")
    t_joined = min(r.time for r in sink.received("/hook/d"))
    wait_until(shared, 30, "the four instances to share the partitions")

    # One of the first three dies.
    time.sleep(3)
    victim = max(["a", "b", "c"], key=lambda n: assigned(daemons[n]))
    victim_parts = {a_p for a_p, who in
                    owners(arrivals_of(sink, names), time.time() - 1.0, time.time()).items()
                    if victim in who}
    t_kill = time.time()
    daemons[victim].kill9()

    producer.join(MESSAGES / RATE + 60)
    assert produced.is_set(), "the producer did not finish"

    def all_delivered():
        ok = {(a["p"], a["o"]) for a in arrivals_of(sink, names) if a["status"] == 200}
        return len(ok) == MESSAGES

    wait_until(all_delivered, 120, "every message to be delivered", interval=0.5)
    arrivals = arrivals_of(sink, names)

    # Nothing skipped.
    ok = {(a["p"], a["o"]) for a in arrivals if a["status"] == 200}
    assert ok == {(i % PARTITIONS, i // PARTITIONS) for i in range(MESSAGES)}

    # The victim's partitions resumed elsewhere: the end of the second rebalance.
    t_resumed = max(min(a["t"] for a in arrivals
                        if a["p"] == p and a["t"] > t_kill and a["who"] != victim)
                    for p in victim_parts)

    report = []
    moved = set()
    for what, t_from, t_to in (("join", t_join, t_joined), ("kill", t_kill, t_resumed)):
        before = owners(arrivals, t_from - 2.0, t_from)
        after = owners(arrivals, t_to + 1.0, t_to + 3.0)
        stayed = {p for p in range(PARTITIONS)
                  if len(before.get(p, ())) == 1 and before.get(p) == after.get(p)
                  and before[p] != {victim}}
        moved |= set(range(PARTITIONS)) - stayed
        gaps = {p: max_gap([a["t"] for a in arrivals if a["p"] == p], t_from, t_to)
                for p in range(PARTITIONS)}
        report.append(f"{what}: rebalance {t_to - t_from:.1f}s, kept {sorted(stayed)}, "
                      f"longest gap per partition " +
                      ", ".join(f"{p}:{g:.2f}s" for p, g in sorted(gaps.items())))
        assert stayed, f"{what}: no partition kept its owner: {report}"
        # Partitions that stayed kept being delivered while the rebalance ran.
        # A gap in what the test itself produced (its thread starved on a
        # loaded machine) is not ackd's: it is allowed on top.
        for p in stayed:
            idle = max_gap(sent.get(p, []), t_from, t_to)
            assert gaps[p] < MAX_GAP_S + idle, f"{what}: partition {p} stopped for " \
                f"{gaps[p]:.1f}s though it did not move (the test produced nothing to it " \
                f"for {idle:.1f}s of that); {report}"
    print("\n".join(report))

    # Delivered twice only where a partition moved.
    seen, twice = set(), set()
    for a in sorted(arrivals, key=lambda a: a["t"]):
        if a["status"] == 200:
            if (a["p"], a["o"]) in seen:
                twice.add((a["p"], a["o"]))
            seen.add((a["p"], a["o"]))
    assert {p for p, _ in twice} <= moved, \
        f"redelivered {len(twice)} on {sorted({p for p, _ in twice})}, moved {sorted(moved)}; " \
        f"{report}; owners: {timeline(arrivals, t0=t_join)}; twice: " \
        f"{[(p, o, times(arrivals, p, o, t_join)) for p, o in sorted(twice)[:40]]}"
    print(f"redelivered: {len(twice)} messages, on partitions "
          f"{sorted({p for p, _ in twice})}; moved: {sorted(moved)}")


def arrivals_of(sink, names):
    out = []
    for name in names:
        for r in sink.received(f"/hook/{name}"):
            out.append({"t": r.time, "who": name, "p": int(r.header("ackd-partition")),
                        "o": int(r.header("ackd-offset")), "status": r.status})
    return out


def timeline(arrivals, t0):
    """Per partition, who delivered it from when to when (seconds after t0)."""
    out = {}
    for a in sorted(arrivals, key=lambda a: a["t"]):
        segs = out.setdefault(a["p"], [])
        if segs and segs[-1][0] == a["who"]:
            segs[-1][2] = round(a["t"] - t0, 2)
        else:
            segs.append([a["who"], round(a["t"] - t0, 2), round(a["t"] - t0, 2)])
    return out


def times(arrivals, p, o, t0):
    return [(a["who"], round(a["t"] - t0, 2)) for a in arrivals if a["p"] == p and a["o"] == o]
