"""W3C Trace Context on webhook requests (docs/webhooks.md): a
message's traceparent and tracestate Kafka headers go out as request headers
of the same names, so a trace runs from the publisher to the receiver.
Against a real Kafka broker and the in-process webhook sink; the last test
runs the whole way, from a publish request to ackd through Kafka to the
webhook (docs/http-api.md, "Trace context").
"""

import json
import urllib.parse

from test_webhook import (DELIVERY_TIMEOUT, end_offsets, new_topic, produce_all, start_ackd,
                          subscription, wait_committed)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_trace_context_headers_reach_the_endpoint(kafka, ackd, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    start_ackd(ackd, sub)
    produce_all(kafka, topic, [
        # both, among other headers
        {"value": b"traced", "headers": [("content-type", b"text/plain"),
                                         ("traceparent", TRACEPARENT.encode()),
                                         ("tracestate", TRACESTATE.encode())]},
        # traceparent alone
        {"value": b"parent only", "headers": [("traceparent", TRACEPARENT.encode())]},
        # none
        {"value": b"untraced", "headers": [("x-other", b"1")]},
        # a value that cannot stand on a request line: only the ackd-header-* copy
        {"value": b"broken", "headers": [("traceparent", b"00-ab\r\nX-Injected: 1")]},
        # two of a name: the first goes
        {"value": b"twice", "headers": [("tracestate", b"a=1"), ("tracestate", b"b=2")]},
    ])
    reqs = {r.body: r for r in webhook_sink.wait_for(5, timeout=DELIVERY_TIMEOUT)}

    traced = reqs[b"traced"]
    assert traced.header("traceparent") == TRACEPARENT
    assert traced.header("tracestate") == TRACESTATE
    assert traced.header("Content-Type") == "text/plain"
    # still sent as every Kafka header is, too
    assert traced.header("ackd-header-traceparent") == urllib.parse.quote(TRACEPARENT, safe="")
    assert traced.header("ackd-header-tracestate") == urllib.parse.quote(TRACESTATE, safe="")

    assert reqs[b"parent only"].header("traceparent") == TRACEPARENT
    assert reqs[b"parent only"].header("tracestate") is None
    assert reqs[b"untraced"].header("traceparent") is None
    assert reqs[b"untraced"].header("tracestate") is None

    broken = reqs[b"broken"]
    assert broken.header("traceparent") is None
    assert broken.header("X-Injected") is None
    assert broken.header("ackd-header-traceparent") == "00-ab%0D%0AX-Injected%3A%201"

    assert reqs[b"twice"].headers.get_all("tracestate") == ["a=1"]
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))


def test_trace_context_runs_from_the_publisher_to_the_webhook(ackd, kafka, webhook_sink):
    topic = new_topic(kafka)
    sub = subscription(topic, webhook_sink)
    daemon = start_ackd(ackd, sub)
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    trace = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}

    single = daemon.http.post(f"/v1/topics/{topic}", body=b"single", headers=trace)
    batch = daemon.unix.post(f"/v1/topics/{topic}/records",
                             body=json.dumps({"records": [{"value": "batch"}]}).encode(),
                             headers={"Content-Type": "application/json",
                                      "traceparent": other})
    v2 = daemon.http.post(f"/topics/{topic}",
                          body=json.dumps({"records": [{"value": "djI="}]}).encode(),
                          headers={"Content-Type": "application/vnd.kafka.binary.v2+json",
                                   **trace})
    v3 = daemon.http.post(f"/v3/clusters/c/topics/{topic}/records",
                          body=json.dumps({"value": {"type": "STRING", "data": "v3"}}).encode(),
                          headers={"Content-Type": "application/json", **trace})
    bad = daemon.http.post(f"/v1/topics/{topic}", body=b"bad",
                           headers={"traceparent": "00-xyz", "tracestate": TRACESTATE})
    for r in (single, batch, v2, v3, bad):
        assert r.status == 200, (r.status, r.body)

    reqs = {r.body: r for r in webhook_sink.wait_for(5, timeout=DELIVERY_TIMEOUT)}

    for body in (b"single", b"v2", b"v3"):
        assert reqs[body].header("traceparent") == TRACEPARENT, body
        assert reqs[body].header("tracestate") == TRACESTATE, body
    assert reqs[b"batch"].header("traceparent") == other
    assert reqs[b"batch"].header("tracestate") is None
    # an invalid traceparent was not stored: nothing to send on
    assert reqs[b"bad"].header("traceparent") is None
    assert reqs[b"bad"].header("tracestate") is None
    wait_committed(kafka, sub["group"], topic, end_offsets(kafka, topic))
