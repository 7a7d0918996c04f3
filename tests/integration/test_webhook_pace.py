"""Pace of webhook delivery (docs/webhooks.md, "Pace"): concurrency = "adaptive"
against an endpoint that takes at most K requests at once and answers 429
beyond, and rate_limit measured over a few seconds. Against a real Kafka
broker and the in-process webhook sink.
"""

import statistics
import threading
import time

from kafka import wait_until
from test_webhook import (DELIVERY_TIMEOUT, end_offsets, new_topic, produce_all, start_ackd,
                          subscription, wait_committed)
from webhook_sink import Reply

K = 6              # what the endpoint takes at once
HOLD = 0.05        # how long it works on one request


class Limited:
    """Answers 200 after HOLD to at most K requests at once, 429 to the rest
    at once."""

    def __init__(self):
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, req):
        with self._lock:
            if self.active >= K:
                return Reply(429)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(HOLD)
        finally:
            with self._lock:
                self.active -= 1
        return Reply(200)


def sub_status(daemon):
    [s] = daemon.http.get("/v1/status").json()["subscriptions"]
    return s


def metric(daemon, name):
    for line in daemon.http.get("/metrics").body.decode().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def run_limited(kafka, ackd, sink, concurrency, count):
    """Deliver count messages to a Limited endpoint; the requests in order
    and the windows /v1/status showed every 100 ms."""
    sink.respond("/hook", Limited())
    topic = new_topic(kafka)
    sub = subscription(topic, sink, ordering="none", max_in_flight=64,
                       concurrency=concurrency,
                       retry={"initial_ms": 20, "max_ms": 100, "max_attempts": 0})
    daemon = start_ackd(ackd, sub)
    produce_all(kafka, topic, [{"value": b"m%d" % i} for i in range(count)])
    windows = []

    def delivered():
        windows.append(sub_status(daemon)["concurrency_limit"])
        return sum(1 for r in sink.received("/hook") if r.status == 200) >= count

    wait_until(delivered, DELIVERY_TIMEOUT * 2, f"{count} deliveries", interval=0.1)
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
    return daemon, sink.received("/hook"), windows


def rejected_share(reqs):
    return sum(1 for r in reqs if r.status == 429) / len(reqs)


def test_adaptive_window_settles_near_endpoint_limit(kafka, ackd, webhook_sink):
    daemon, reqs, windows = run_limited(kafka, ackd, webhook_sink, "adaptive", 600)
    settled = windows[len(windows) // 3:]
    second_half = reqs[len(reqs) // 2:]
    print(f"adaptive: {len(reqs)} requests for 600 messages, 429 share "
          f"{rejected_share(reqs):.1%} overall, {rejected_share(second_half):.1%} in the "
          f"second half; window median {statistics.median(settled)}, "
          f"range {min(settled)}-{max(settled)}")
    assert K / 2 <= statistics.median(settled) <= K + 1, settled
    assert max(settled) <= 2 * K, settled
    assert rejected_share(second_half) < 0.2
    assert sub_status(daemon)["rate_limit"] == 0
    assert 1 <= metric(daemon, "ackd_webhook_concurrency_limit") <= 64


def test_fixed_concurrency_floods_the_same_endpoint(kafka, ackd, webhook_sink):
    """The contrast: max_in_flight at once, and 429 is the common answer."""
    daemon, reqs, windows = run_limited(kafka, ackd, webhook_sink, "fixed", 300)
    print(f"fixed: {len(reqs)} requests for 300 messages, 429 share "
          f"{rejected_share(reqs):.1%}")
    assert set(windows) == {64}
    assert metric(daemon, "ackd_webhook_concurrency_limit") == 64
    assert rejected_share(reqs) > 0.5


def test_rate_limit(kafka, ackd, webhook_sink):
    rate = 40
    topic = new_topic(kafka, partitions=4)
    sub = subscription(topic, webhook_sink, ordering="none", max_in_flight=64,
                       rate_limit=rate)
    daemon = start_ackd(ackd, sub)
    assert sub_status(daemon)["rate_limit"] == rate
    count = 200
    produce_all(kafka, topic, [{"value": b"r%d" % i} for i in range(count)])
    reqs = webhook_sink.wait_for(count, timeout=DELIVERY_TIMEOUT)
    times = sorted(r.started for r in reqs)
    # steady state: from the 10th request to the last
    span = times[-1] - times[9]
    measured = (count - 10) / span
    # the most in any one second window
    peak = max(sum(1 for t in times if s <= t < s + 1) for s in times)
    print(f"rate_limit {rate}: {measured:.1f} messages/s over {span:.1f} s, "
          f"peak {peak} in one second")
    assert abs(measured - rate) <= 0.1 * rate, measured
    assert peak <= rate * 1.1 + 1, peak
    ends = {p: o for p, o in end_offsets(kafka, topic).items() if o > 0}
    wait_committed(kafka, sub["group"], topic, ends)
