"""grafana/msd.json: importable as is, and every metric (and label) it queries is one msd exports."""
import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from msd import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "msd.json"
PANELS_AN_OPERATOR_WATCHES = (
    "Signals sent by strategy and mode", "Throttled and suppressed", "Exits by reason", "Invalid messages by source",
    "Outbox backlog and age", "Dependency state per role", "Role restarts", "Training runs and outcomes",
    "Live model quality against its threshold", "Warm-up spend", "Live calibration", "Exit protection",
    "Process memory (RSS)", "Tick to signal",
)


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, for every metric msd.metrics defines."""
    samples = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        base = metric._name
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(metric._type, [""])
        for suffix in suffixes:
            samples[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return samples


def targets():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_the_dashboard_is_importable_as_is():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["uid"] and dashboard["title"] and "id" not in dashboard
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["targets"] and all(t["refId"] for t in panel["targets"])


@pytest.mark.parametrize("title", PANELS_AN_OPERATOR_WATCHES)
def test_the_panels_an_operator_watches_are_there(title):
    assert any(t.startswith(title) for t, _ in targets())


def test_every_metric_the_dashboard_queries_is_exported():
    known = exported()
    queried = {name for _, expr in targets() for name in re.findall(r"\bmsd_[a-z0-9_]+", expr)}
    assert queried and not queried - set(known), sorted(queried - set(known))


def test_every_label_the_dashboard_groups_or_filters_by_exists():
    known = exported()
    for title, expr in targets():
        names = re.findall(r"\bmsd_[a-z0-9_]+", expr)
        labels = set().union(*(known[n] for n in names))
        used = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
        used |= set(re.findall(r"\{(\w+)=", expr))
        assert used <= labels, (title, expr, used - labels)
