"""The operator's kit in contrib/: Prometheus alert rules with their promtool
unit tests, the Grafana dashboard, and the runbook in docs/operations.md
("Alerts and runbook").

- the rules pass `promtool check rules`, and `promtool test rules` passes
  with a firing and a non-firing case for every alert; a rule that never
  fires, or fires without waiting for its "for", fails those tests, so they
  test the rules and not themselves;
- every alert has a severity, a summary naming the instance (and the
  subscription, for subscription metrics) and a runbook_url whose anchor is a
  runbook section with what it means, what to look at and what to do;
- the dashboard is valid JSON, every PromQL expression in it parses, and
  every metric (and label) it or the rules use is in the /metrics of a
  running ackd with a subscription that delivered;
- a real Prometheus (Debian's prometheus package) scrapes a running ackd
  with the rules loaded (their "for" shortened, the spool-age threshold
  lowered): the spool-age, Kafka and readiness alerts fire when Kafka goes
  away and resolve when it is back.
"""

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from ackd_proc import REPO, free_port
from test_operations import (mock_all_down, mock_all_up, new_topic, publish, readyz, scrape,
                             subscription, wait_for)

CONTRIB = REPO / "contrib"
RULES = CONTRIB / "prometheus" / "ackd-alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "ackd-alerts.test.yml"
DASHBOARD = CONTRIB / "grafana" / "ackd-dashboard.json"
OPERATIONS = REPO / "docs" / "operations.md"

SEVERITIES = {"warning", "critical"}
# Labels Prometheus adds to every scraped series: not in ackd's /metrics.
TARGET_LABELS = {"instance", "job"}
# Metrics Prometheus makes itself.
PROMETHEUS_METRICS = {"up"}
# Grafana's variables, as a query would see them with "All" selected.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
                     "instance": ".*", "subscription": ".*", "datasource": "prometheus"}


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's prometheus package (scripts/test does)"
    return path


def run_promtool(*args, cwd=None):
    return subprocess.run([promtool(), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60, cwd=cwd)


def load_rules(path=RULES):
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def alerts():
    rules = load_rules()
    assert rules and all("alert" in r for r in rules), "every rule is an alert"
    return {r["alert"]: r for r in rules}


ALERT_NAMES = sorted(alerts())


def check_rules(path):
    r = run_promtool("check", "rules", path)
    return r.returncode, r.stdout


def run_rule_tests(rules_dir):
    """promtool test rules on a copy of the tests next to the rules in rules_dir."""
    shutil.copy(RULE_TESTS, rules_dir / RULE_TESTS.name)
    return run_promtool("test", "rules", RULE_TESTS.name, cwd=rules_dir)


# --- the rules and their promtool tests ----------------------------------------------

def test_alert_rules_pass_promtool_check():
    rc, out = check_rules(RULES)
    assert rc == 0, out
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in out, out


def test_promtool_unit_tests_pass_with_a_firing_and_a_quiet_case_per_alert():
    r = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout

    doc = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for t in case["alert_rule_test"]:
            (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert fires == set(ALERT_NAMES), f"no firing case: {set(ALERT_NAMES) - fires}"
    assert quiet == set(ALERT_NAMES), f"no non-firing case: {set(ALERT_NAMES) - quiet}"


def mutated_rules(tmp_path, alert, change):
    doc = yaml.safe_load(RULES.read_text())
    found = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert len(found) == 1
    change(found[0])
    (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_promtool_tests_fail_when_the_alert_never_fires(tmp_path, alert):
    """The firing case depends on the rule: with an expression that matches
    nothing, promtool test rules fails for this alert."""
    d = mutated_rules(tmp_path, alert, lambda r: r.update(expr="vector(1) < 0"))
    r = run_rule_tests(d)
    assert r.returncode != 0, r.stdout
    assert f"alertname: {alert}," in r.stdout, r.stdout


@pytest.mark.parametrize("alert", [a for a in ALERT_NAMES if "for" in alerts()[a]])
def test_promtool_tests_fail_when_the_alert_does_not_wait_for_its_for(tmp_path, alert):
    """The non-firing case before "for" has passed depends on it."""
    d = mutated_rules(tmp_path, alert, lambda r: r.pop("for"))
    r = run_rule_tests(d)
    assert r.returncode != 0, r.stdout
    assert f"alertname: {alert}," in r.stdout, r.stdout


# --- labels, annotations, runbook ----------------------------------------------------------

def github_anchor(heading):
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def runbook_sections():
    """{anchor: text} of the ### sections under "## Alerts and runbook"."""
    text = OPERATIONS.read_text()
    m = re.search(r"^## Alerts and runbook\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "docs/operations.md has no '## Alerts and runbook' section"
    sections = {}
    for part in re.split(r"^### ", m.group(1), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        sections[github_anchor(heading)] = body
    return sections


def uses_subscription_metric(expr):
    return re.search(r"\backd_(webhook|consumer|subscription)_", expr) is not None


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_alert_has_severity_summary_and_runbook(alert):
    rule = alerts()[alert]
    assert rule["labels"]["severity"] in SEVERITIES, rule
    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}, ann
    assert "{{ $labels.instance }}" in ann["summary"], ann["summary"]
    if uses_subscription_metric(rule["expr"]):
        assert "{{ $labels.subscription }}" in ann["summary"], ann["summary"]
    url = ann["runbook_url"]
    assert url.startswith("docs/operations.md#"), url
    anchor = url.split("#", 1)[1]
    assert anchor == alert.lower(), url
    sections = runbook_sections()
    assert anchor in sections, f"no runbook section '### {alert}' in docs/operations.md"
    body = sections[anchor]
    for part in ("**Means.**", "**Look at.**", "**Do.**"):
        assert part in body, f"runbook for {alert} has no {part}"


def test_runbook_has_a_section_per_alert_and_no_other():
    """Besides how to load the rules and the dashboard, one section per alert."""
    sections = set(runbook_sections())
    assert "loading-the-rules-and-the-dashboard" in sections
    assert sections - {"loading-the-rules-and-the-dashboard"} == {a.lower() for a in ALERT_NAMES}


# --- the dashboard ----------------------------------------------------------------------------

def dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def substitute(expr):
    def var(m):
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown dashboard variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, expr)


def dashboard_queries():
    """Every PromQL expression of the dashboard, variables substituted: panel
    targets and the selectors inside the variables' label_values()."""
    dash = dashboard()
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", substitute(t["expr"])))
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        assert m, f"variable {v['name']}: not a label_values() query: {q}"
        out.append((f"variable {v['name']}", substitute(m.group(1))))
    return out


def test_dashboard_is_valid_json_with_unique_panels_and_queries():
    dash = dashboard()
    panels = list(all_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dash["uid"] and dash["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance", "subscription"} <= names
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


def test_dashboard_queries_parse_with_promtool(tmp_path):
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"ackd_dashboard:query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    rc, out = check_rules(path)
    assert rc == 0, out
    assert f"SUCCESS: {len(queries)} rules found" in out, out

    # The check can fail: one unbalanced parenthesis is refused.
    rules["groups"][0]["rules"].append(
        {"record": "ackd_dashboard:broken", "expr": "sum(rate(ackd_publish_records_total[1m])"})
    path.write_text(yaml.safe_dump(rules))
    rc, out = check_rules(path)
    assert rc != 0 and "ackd_dashboard:broken" in out, out


# --- every metric used exists in a running ackd --------------------------------------------

SELECTOR_RE = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
GROUPING_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def metric_selectors(expr):
    """[(metric name, [label names matched])] of the ackd_ metrics and up in expr."""
    out = []
    for m in SELECTOR_RE.finditer(expr):
        name = m.group(1)
        ackd_metric = name.startswith("ackd_") and ":" not in name
        prometheus_metric = name in PROMETHEUS_METRICS and m.group(2) is not None
        if ackd_metric or prometheus_metric:
            out.append((name, MATCHER_RE.findall(m.group(2) or "")))
    return out


def check_against_scrape(where, expr, series_labels):
    """Every metric in expr exists in the scrape, with the labels matched and
    grouped by. series_labels: {name: set of label names}."""
    selectors = metric_selectors(expr)
    assert selectors, f"{where}: no ackd metric in {expr}"
    problems = []
    available = set(TARGET_LABELS)
    for name, matched in selectors:
        if name in PROMETHEUS_METRICS:
            continue
        if name not in series_labels:
            problems.append(f"{name} is not in /metrics")
            continue
        available |= series_labels[name]
        for label in matched:
            if label not in TARGET_LABELS and label not in series_labels[name]:
                problems.append(f"{name} has no label {label}")
    for group in GROUPING_RE.findall(expr):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            if label not in available:
                problems.append(f"grouping by {label}, which none of its metrics has")
    assert not problems, f"{where}: {expr}: " + "; ".join(problems)


@pytest.fixture
def delivered_ackd(kafka, ackd, webhook_sink):
    """An ackd with a subscription that delivered messages, so that every
    family it exports (subscription requests, latency, lag) is in /metrics."""
    topic = new_topic(kafka, partitions=2, prefix="kit")
    name = f"kit-{uuid.uuid4().hex[:8]}"
    daemon = ackd(subscriptions=[subscription(name, topic, webhook_sink, "/kit")])
    for i in range(4):
        r = publish(daemon, topic, f"m{i}".encode(), key=f"k{i}")
        assert r.status == 200, r.body
    webhook_sink.wait_for(4, timeout=60, path="/kit")

    def complete():
        m = scrape(daemon)
        return m.has("ackd_webhook_requests_total", subscription=name, status="2xx") and \
            m.get("ackd_webhook_requests_total", subscription=name, status="2xx") >= 4 and \
            len(m.series("ackd_consumer_lag")) >= 1
    wait_for(complete, 60, "request and lag metrics for the subscription", daemon)
    return daemon


def scraped_labels(daemon):
    labels = {}
    for (name, lbls) in scrape(daemon).samples:
        labels.setdefault(name, set()).update(k for k, _ in lbls)
    return labels


def test_every_dashboard_and_alert_metric_is_exported_by_ackd(delivered_ackd):
    series = scraped_labels(delivered_ackd)
    for fam in ("ackd_ready", "ackd_healthy", "ackd_start_time_seconds", "ackd_spool_max_bytes",
                "ackd_consumer_lag", "ackd_webhook_latency_seconds_bucket"):
        assert fam in series, f"{fam} missing from /metrics"
    m = scrape(delivered_ackd)
    assert m.get("ackd_ready") == 1 and m.get("ackd_healthy") == 1
    assert abs(m.get("ackd_start_time_seconds") - time.time()) < 300
    assert m.get("ackd_spool_max_bytes") == 1073741824  # the default spool.max_bytes

    used = set()
    for where, expr in dashboard_queries():
        check_against_scrape(where, expr, series)
        used |= {n for n, _ in metric_selectors(expr)}
    for alert, rule in alerts().items():
        check_against_scrape(f"alert {alert}", rule["expr"], series)

    # The check can fail: a misspelt metric or label is reported.
    with pytest.raises(AssertionError, match="ackd_spool_recrods is not in /metrics"):
        check_against_scrape("probe", "ackd_spool_recrods", series)
    with pytest.raises(AssertionError, match="has no label topic"):
        check_against_scrape("probe", 'ackd_webhook_retrying{topic="x"}', series)
    with pytest.raises(AssertionError, match="grouping by reason"):
        check_against_scrape("probe", "sum by (reason) (ackd_spool_records)", series)

    # Every family ackd exports is in the metrics tables of docs/operations.md,
    # which the runbook refers to.
    doc = OPERATIONS.read_text()
    undocumented = [f for f in m.types if f"`{f}`" not in doc and f"`{f}{{" not in doc]
    assert not undocumented, f"not in docs/operations.md: {undocumented}"

    # What the issue asks the dashboard to show.
    for name in ("ackd_publish_requests_total", "ackd_spool_records",
                 "ackd_spool_oldest_age_seconds", "ackd_produce_latency_seconds_bucket",
                 "ackd_kafka_reachable", "ackd_webhook_delivered_total",
                 "ackd_webhook_latency_seconds_bucket", "ackd_consumer_lag",
                 "ackd_webhook_retries_total", "ackd_webhook_dead_lettered_total",
                 "ackd_webhook_in_flight"):
        assert name in used, f"the dashboard does not show {name}"


# --- a real Prometheus ---------------------------------------------------------------------------

PROMETHEUS_START_TIMEOUT = 30
TEST_FOR = "2s"
SPOOL_AGE_THRESHOLD = 5  # seconds, instead of 300


class Prometheus:
    """Debian's prometheus on a free loopback port, storage in a temp dir."""

    def __init__(self, targets, rules_path):
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: install Debian's prometheus package"
        self.dir = Path(tempfile.mkdtemp(prefix="ackd-prom-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(rules_path)],
            "scrape_configs": [{"job_name": "ackd",
                                "static_configs": [{"targets": list(targets)}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, PROMETHEUS_START_TIMEOUT, "Prometheus /-/ready")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode}): "
                                 f"{self.log_text()[-2000:]}")

    def log_text(self):
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.status, r.read()

    def ready(self):
        self.check_alive()
        try:
            return self.get("/-/ready")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path):
        self.check_alive()
        status, body = self.get(path)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", doc
        return doc["data"]

    def alerts(self):
        """{alertname: state} of the active alerts (pending or firing)."""
        return {a["labels"]["alertname"]: a["state"] for a in self.api("/api/v1/alerts")["alerts"]}

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fast_rules(path):
    """The rules with every "for" at TEST_FOR and the spool-age threshold at
    SPOOL_AGE_THRESHOLD seconds, so a test sees them fire in seconds."""
    doc = yaml.safe_load(RULES.read_text())
    spool_age = 0
    for g in doc["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = TEST_FOR
            if r["alert"] == "AckdSpoolOldestRecordOld":
                assert "> 300" in r["expr"], r["expr"]
                r["expr"] = r["expr"].replace("> 300", f"> {SPOOL_AGE_THRESHOLD}")
                spool_age += 1
    assert spool_age == 1
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_real_prometheus_fires_and_resolves_spool_age_alert(mock_kafka, ackd, tmp_path,
                                                           capsys):
    """Kafka (the mock cluster's three brokers) goes away with a record in the
    spool: AckdSpoolOldestRecordOld, AckdKafkaUnreachable and AckdNotReady
    fire; Kafka comes back: the record is delivered and they resolve."""
    mock = mock_kafka
    mock.create_topic("events", partitions=1, rf=3)
    daemon = ackd(brokers=mock.bootstrap)
    wait_for(lambda: readyz(daemon)[0] == 200, 30, "/readyz 200", daemon)
    target = f"127.0.0.1:{daemon.http_port}"
    prom = Prometheus([target], fast_rules(tmp_path / "ackd-alerts.yml"))
    try:
        def scraped():
            t = prom.api("/api/v1/targets")["activeTargets"]
            return len(t) == 1 and t[0]["health"] == "up" and prom.api(
                "/api/v1/query?query=ackd_spool_records")["result"]
        wait_for(scraped, 30, "Prometheus to scrape ackd", daemon)
        loaded = {r["name"] for g in prom.api("/api/v1/rules")["groups"] for r in g["rules"]}
        assert loaded == set(ALERT_NAMES)
        time.sleep(3)  # longer than TEST_FOR: a healthy ackd fires nothing
        assert prom.alerts() == {}

        t0 = time.monotonic()
        mock_all_down(mock)
        r = publish(daemon, "events", b"while kafka is down", ack="spool")
        assert r.status == 202, r.body
        want = {"AckdSpoolOldestRecordOld", "AckdKafkaUnreachable", "AckdNotReady"}
        fired = {}

        def firing():
            for name, state in prom.alerts().items():
                if state == "firing" and name not in fired:
                    fired[name] = time.monotonic() - t0
            return want <= set(fired)
        wait_for(firing, 60, f"{sorted(want)} firing", daemon, interval=0.5)
        assert set(fired) == want, fired
        [a] = [a for a in prom.api("/api/v1/alerts")["alerts"]
               if a["labels"]["alertname"] == "AckdSpoolOldestRecordOld"]
        assert a["labels"] == {"alertname": "AckdSpoolOldestRecordOld", "instance": target,
                               "job": "ackd", "severity": "warning"}
        assert a["annotations"]["summary"].startswith(
            f"ackd on {target}: the oldest spooled record waits for Kafka since ")
        assert a["annotations"]["runbook_url"] == "docs/operations.md#ackdspoololdestrecordold"

        t1 = time.monotonic()
        mock_all_up(mock)
        wait_for(lambda: prom.alerts() == {}, 60, "every alert to resolve", daemon,
                 interval=0.5)
        resolved = time.monotonic() - t1
        assert [r.value for r in mock.read_topic("events")] == [b"while kafka is down"]
        assert scrape(daemon).get("ackd_spool_records") == 0
        with capsys.disabled():
            print(f"\nprometheus: fired after Kafka went down: "
                  + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(fired.items()))
                  + f"; all resolved {resolved:.1f}s after Kafka came back")
    finally:
        prom.close()
