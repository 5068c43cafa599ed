"""manifests/monitoring/: alerts pass the real promtool; dashboard queries parse and name exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adaspec.devcluster import build

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
RULE_TESTS = Path(__file__).parent / "prometheusrule_test.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels the Prometheus operator puts on every series scraped through a ServiceMonitor; an exposed label of
# the same name is kept as exported_<name> (honorLabels is off in ours and in the operator's).
TARGET_LABELS = frozenset({"namespace", "pod", "service", "job", "endpoint", "container", "instance"})
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "Inf", "NaN", "start", "end"}
)
# Grafana's variables as promtool should see them.
VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$speculator": ".*"}


# -- what the registries really export ----------------------------------------------------------------------
def _series(exposition: str) -> dict[str, frozenset[str]]:
    """Return series name -> label names as Prometheus stores them (target labels added, clashes renamed)."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
        for suffix in suffixes.get(family.type, ("",)):
            found.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names = {f"exported_{k}" if k in TARGET_LABELS else k for k in sample.labels}
            found.setdefault(sample.name, set()).update(names)
    return {name: frozenset(labels | TARGET_LABELS) for name, labels in found.items()}


@cache
def exported() -> dict[str, frozenset[str]]:
    """Return series -> labels of RuntimeMetrics after one request, of Telemetry after each kind of event."""
    from prometheus_client import generate_latest

    from adaspec.controlplane.telemetry import Telemetry
    from adaspec.runtime.server.metrics import RuntimeMetrics
    from adaspec.runtime.server.scheduler import Outcome
    from adaspec.runtime.stats import GenerationStats, ProposerStats

    runtime = RuntimeMetrics(["static", "suffix", "adaptive"], role="stable")
    runtime.bind(lambda: 0.0, lambda: 1.0)
    runtime.set_revision("r1", 0)
    runtime.on_started(0.01)
    runtime.on_step(3, 0.03, first=False)
    drafted = ProposerStats(2, 5, 3, accepted_per_position=[2, 1, 0], lookaheads=[0, 0, 1, 1])
    stats = GenerationStats(generated_tokens=6, target_forward_passes=3, per_speculator={"static": drafted})
    runtime.on_finished(Outcome("abc", [1, 2, 3], "length", 4, stats, 0.01, 0.02, 0.5))
    cp = Telemetry()
    cp.scrapes.inc()
    cp.scrape_errors.labels("chat").inc()
    cp.drift_events.labels("chat").inc()
    cp.actions.labels("promote", "failed").inc()
    cp.job_duration.labels("scrape").observe(0.1)
    cp.job_errors.labels("scrape").inc()
    cp.leader.set(1)
    return {**_series(generate_latest(runtime.registry).decode()), **_series(cp.exposition().decode())}


# -- PromQL, read as far as these checks need ---------------------------------------------------------------
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()")


def _blank_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects (not functions, keywords, labels or durations)."""
    bare = re.sub(r"\{[^}]*\}", "", _blank_strings(expr))
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = GROUPING.sub("", bare)
    return {m for m in IDENT.findall(bare) if m not in KEYWORDS}


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Return metric name -> label names its selectors match on."""
    out: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(_blank_strings(expr)):
        out.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Return the labels named in by/without/on/ignoring/group_left/group_right clauses."""
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def test_the_promql_reader_finds_metrics_and_labels() -> None:
    expr = (
        'sum by (kind) (rate(foo_total{a="x{y}", b=~"$v"}[5m])) / on () group_left (c) bar '
        "and histogram_quantile(0.9, baz_bucket) > 1e3"
    )
    assert metric_names(expr) == {"foo_total", "bar", "baz_bucket"}
    assert selector_labels(expr) == {"foo_total": {"a", "b"}}
    assert grouping_labels(expr) == {"kind", "c"}


def check_names(where: str, expr: str) -> list[str]:
    """Return the problems of one expression: unknown metrics, labels no series of it carries."""
    known = exported()
    problems = [f"{where}: {m} is not exported" for m in sorted(metric_names(expr) - known.keys())]
    for name, used in selector_labels(expr).items():
        if name in known and used - known[name]:
            problems.append(f"{where}: {name} has no label {sorted(used - known[name])}")
    carried = set().union(*(known.get(m, frozenset()) for m in metric_names(expr)))
    if grouping_labels(expr) - carried:
        problems.append(f"{where}: no metric carries {sorted(grouping_labels(expr) - carried)}")
    return problems


def test_names_are_checked_against_the_scraped_registries() -> None:
    assert check_names("e", 'rate(adaspec_spec_decode_num_drafts_total{speculator="s"}[5m])') == []
    assert (
        "adaspec_spec_decode_drafts_total is not exported"
        in check_names("e", "adaspec_spec_decode_drafts_total")[0]
    )
    assert check_names("e", 'adaspec_generation_tokens_total{speculator="s"}') != []  # no such label on it
    assert check_names("e", "sum by (exported_job) (adaspec_controlplane_job_errors_total)") == []
    assert check_names("e", "sum by (kind) (adaspec_generation_tokens_total)") != []


# -- the PrometheusRule -------------------------------------------------------------------------------------
def rule_groups() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from (r for r in group["rules"] if "alert" in r)


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The pinned promtool from the cache, built from its Go module when missing (a failed build fails)."""
    return build.promtool()


def run_promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_every_alert_has_a_severity_a_summary_and_a_description_with_what_to_do() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)) >= 6
    for alert in alerts():
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"] and "What to do:" in alert["annotations"]["description"]


def test_rules_pass_promtool_check(promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    proc = run_promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in proc.stdout


def test_rules_name_only_exported_metrics_and_labels() -> None:
    problems = [p for a in alerts() for p in check_names(a["alert"], a["expr"])]
    assert problems == []


def unit_test_rules(
    promtool: Path, tmp_path: Path, groups: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """Run `promtool test rules` on RULE_TESTS against `groups` (annotations left out: promtool compares
    them verbatim, and `check rules` has parsed their templates)."""
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)


def test_alerts_fire_and_stay_quiet_on_their_series(promtool: Path, tmp_path: Path) -> None:
    proc = unit_test_rules(promtool, tmp_path, rule_groups())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in cases for c in t["alert_rule_test"] if c["exp_alerts"]}
    assert fired == {a["alert"] for a in alerts()}  # each alert is shown firing (and, exactly, where not)


def test_the_rule_tests_catch_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    groups = rule_groups()
    off = next(r for g in groups for r in g["rules"] if r.get("alert") == "AdaspecSpeculationOff")
    off["expr"] = off["expr"].replace("unless on", "and on")  # fires only where drafts are made
    proc = unit_test_rules(promtool, tmp_path, groups)
    assert proc.returncode != 0
    assert "alertname: AdaspecSpeculationOff" in proc.stdout + proc.stderr


# -- the dashboard ------------------------------------------------------------------------------------------
def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return board


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> Iterator[tuple[str, str]]:
    """Yield (where, PromQL) for every panel target and template variable."""
    for panel in panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m is not None, var["name"]
            yield f"variable {var['name']}", m.group(1)


def test_dashboard_has_datasource_namespace_and_speculator_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, label in (("namespace", "namespace"), ("speculator", "service")):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
        assert variables[name]["query"]["query"].endswith(f", {label})")


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
    assert sum(len(p.get("targets", [])) for p in panels()) >= 20


def test_dashboard_queries_name_only_exported_metrics_and_labels() -> None:
    problems = [p for where, expr in queries() for p in check_names(where, expr)]
    assert problems == []
    used = set().union(*(metric_names(e) for _, e in queries()))
    for required in (
        "adaspec_spec_decode_num_accepted_tokens_total",
        "adaspec_spec_decode_num_draft_tokens_total",
        "adaspec_spec_decode_num_drafts_total",
        "adaspec_generation_tokens_total",
        "adaspec_revision_info",
        "adaspec_controlplane_decisions_total",
        "adaspec_controlplane_drift_events_total",
        "adaspec_controlplane_actions_total",
    ):
        assert required in used


def test_dashboard_queries_parse(promtool: Path, tmp_path: Path) -> None:
    rules = []
    for i, (where, expr) in enumerate(queries()):
        for var in set(re.findall(r"\$\w+", expr)):
            assert var in VARIABLES, f"{where}: unknown variable {var}"
        for var, value in VARIABLES.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    proc = run_promtool(promtool, "check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


# -- the kustomization --------------------------------------------------------------------------------------
def test_kustomization_lists_the_rule_and_the_dashboard_for_grafanas_sidecar() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in kustomization["resources"]
    assert all((MONITORING / r).is_file() for r in kustomization["resources"])
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["adaspec.json=grafana-dashboard.json"]
    assert generator["options"] == {"disableNameSuffixHash": True, "labels": {"grafana_dashboard": "1"}}
    base = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert not any("monitoring" in r for r in base["resources"])  # it needs the Prometheus operator's CRDs


KUBECTL = build.binary_paths()["kubectl"]


@pytest.mark.skipif(not KUBECTL.is_file(), reason="kubectl not built (run `adaspec dev cluster build`)")
def test_kubectl_kustomize_renders_the_dashboard_configmap_and_the_rule() -> None:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    assert set(docs) == {"ConfigMap", "PrometheusRule", "ServiceMonitor"}
    configmap = docs["ConfigMap"]
    assert configmap["metadata"]["name"] == "adaspec-grafana-dashboard"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["adaspec.json"]) == dashboard()
    assert docs["PrometheusRule"]["spec"]["groups"] == rule_groups()
    assert all(d["metadata"]["namespace"] == "adaspec-system" for d in docs.values())
