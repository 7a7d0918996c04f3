"""W3C Trace Context on webhook requests (docs/webhooks.md): a
message's traceparent and tracestate Kafka headers go out as request headers
of the same names, so a trace runs from the publisher to the receiver.
Against a real Kafka broker and the in-process webhook sink.
"""

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
