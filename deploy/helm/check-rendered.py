#!/usr/bin/env python3
"""Checks what `kubernetes-validate` can't: the CRD resources of a rendered pgfleet chart
(KEDA ScaledObject / TriggerAuthentication, Prometheus operator ServiceMonitor /
PrometheusRule) have the fields those operators require and point at resources the chart
renders; and the workers' termination grace outlasts their shutdown grace.
Usage: check-rendered.py RENDERED.yaml   (exit 1 with the problems on stderr)"""
import sys
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
problems = []
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

def need(cond, what):
    if not cond:
        problems.append(what)

deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
services = by_kind.get("Service", [])
for name, d in deployments.items():
    spec = d["spec"]["template"]["spec"]
    for c in spec["containers"]:
        env = {e["name"]: e for e in c.get("env", [])}
        for e in env.values():
            need("value" not in e or not any(s in e["name"] for s in ("URL", "KEY", "TOKEN", "SECRET"))
                 or e["name"] in ("PGFLEET_BACKUP_URL",), f"{name}: {e['name']} is inlined, not a secret reference")
        if "PGFLEET_SHUTDOWN_GRACE_SECS" in env:
            grace = int(env["PGFLEET_SHUTDOWN_GRACE_SECS"]["value"])
            need(spec.get("terminationGracePeriodSeconds", 30) > grace,
                 f"{name}: terminationGracePeriodSeconds must exceed the shutdown grace {grace}")
        if c["args"][0] in ("worker", "serve"):
            need("livenessProbe" in c and "readinessProbe" in c, f"{name}: probes missing")
        need("requests" in c.get("resources", {}), f"{name}: no resource requests")
    labels = d["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/component", "app.kubernetes.io/managed-by"):
        need(key in labels, f"{name}: recommended label {key} missing")

for so in by_kind.get("ScaledObject", []):
    spec = so.get("spec", {})
    target = spec.get("scaleTargetRef", {}).get("name")
    need(target in deployments, f"ScaledObject targets {target!r}, which is not rendered")
    triggers = spec.get("triggers") or []
    need(triggers, "ScaledObject has no triggers")
    for t in triggers:
        md = t.get("metadata", {})
        need(t.get("type") == "rabbitmq", f"trigger {t.get('name')}: type")
        for f in ("queueName", "mode", "value", "protocol"):
            need(f in md, f"trigger {t.get('name')}: metadata.{f} missing")
        need(md.get("protocol") != "amqp" or spec.get("cooldownPeriod", 300) >= 3600,
             "amqp protocol counts only ready messages: long jobs need protocol http")
        need(t.get("authenticationRef", {}).get("name") in
             [a["metadata"]["name"] for a in by_kind.get("TriggerAuthentication", [])],
             f"trigger {t.get('name')}: authenticationRef is not rendered")
for ta in by_kind.get("TriggerAuthentication", []):
    refs = ta.get("spec", {}).get("secretTargetRef") or []
    need(refs and all({"parameter", "name", "key"} <= set(r) for r in refs), "TriggerAuthentication: secretTargetRef fields")

for sm in by_kind.get("ServiceMonitor", []):
    spec = sm.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    matched = [s for s in services if all(s["spec"]["selector"].get(k) == v for k, v in sel.items())]
    need(matched, "ServiceMonitor selects no rendered Service")
    ports = {p["name"] for s in matched for p in s["spec"]["ports"]}
    for ep in spec.get("endpoints") or [None]:
        need(ep and ep.get("port") in ports, f"ServiceMonitor endpoint {ep} names no Service port")

for pr in by_kind.get("PrometheusRule", []):
    groups = pr.get("spec", {}).get("groups") or []
    need(groups, "PrometheusRule has no groups")
    for g in groups:
        need(g.get("name") and g.get("rules"), "PrometheusRule group without name or rules")
        for r in g.get("rules", []):
            need(r.get("alert") and r.get("expr"), f"PrometheusRule rule {r} lacks alert or expr")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(docs)} resources ({', '.join(sorted(by_kind))})")
