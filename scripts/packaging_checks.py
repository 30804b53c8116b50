"""Offline checks of the Dockerfile, the Helm chart and the kustomize manifests (run by scripts/check-packaging).

No cluster and no image registry exist where this runs, so everything is checked as far as it can be without
them: hadolint on the Dockerfile; the real Helm v4 SDK (helm-python-sdk) lints and renders the chart for several
value sets and must refuse bad values; every rendered object is validated against the Kubernetes 1.30 schemas
(kubernetes-validate --strict); the rendered config.toml is parsed as TOML and, when a built `switchboard` binary
is at hand, accepted by `switchboard check-config`; k8s/ must equal what the chart renders; `kubectl kustomize`
output of k8s/ is validated too; the Grafana dashboard must cover exactly the metrics in README.md's metrics table.

    python scripts/packaging_checks.py [--update-k8s]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "switchboard"
K8S = ROOT / "k8s"
KUBE_VERSION = "1.30.0"
RELEASE = "switchboard"
NAMESPACE = "switchboard"
# Kinds whose schemas are not in kubernetes-validate's bundle (CRDs); they are skipped, and said so.
CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1 is a Prometheus Operator CRD, not a built-in schema"}

# The URL written into k8s/base: a placeholder for the production Redis, replaced by an overlay or by hand.
BASE_REDIS_URL = "redis://redis.example.internal:6379"
OVERLAY_REDIS_URL = f"redis://{RELEASE}-redis:6379"

NGINX_WS = {
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
}

# Value sets that must lint cleanly (--strict), render, and validate.
GOOD: dict[str, dict[str, Any]] = {
    # `helm install switchboard ./helm/switchboard` with no values: two pods and the in-chart Redis.
    "defaults": {},
    "defaults+redis.url": {"redis": {"url": BASE_REDIS_URL}},
    "autoscaling": {
        "redis": {"url": BASE_REDIS_URL},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12, "connectionsPerPod": 500},
    },
    "ingress": {
        "redis": {"url": BASE_REDIS_URL},
        "existingSecret": "switchboard-secrets",
        "config": {"auth": {"mode": "jwt"}},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": NGINX_WS,
            "hosts": [{"host": "chat.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "chat-tls", "hosts": ["chat.example.com"]}],
        },
    },
    "in-chart-redis+everything": {
        "redis": {"enabled": True},
        "existingSecret": "switchboard-secrets",
        "env": [{"name": "RUST_LOG", "value": "info"}],
        "networkPolicy": {"enabled": True, "ingressFrom": [{"namespaceSelector": {}}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True},
        "podAnnotations": {"example.com/team": "chat"},
        "config": {
            "llm": {"base_url": "https://llm.internal/v1", "model": "gpt-4o"},
            "auth": {"mode": "jwt"},
            "agents": [
                {
                    "id": "11111111-1111-1111-1111-111111111111",
                    "name": "Aria",
                    "system_prompt": 'You are a helpful support agent. Say "hi" & <be nice>.\nSecond line.',
                    "confirm_tools": ["delete_*"],
                    "models": ["gpt-4o", "gpt-4o-mini"],
                    "tools": [
                        {
                            "name": "delete_record",
                            "description": "Delete a record by id",
                            "parameters": {
                                "type": "object",
                                "properties": {"id": {"type": "string"}, "force": {"type": "boolean"}},
                                "required": ["id"],
                                "additionalProperties": False,
                            },
                            "url": "http://orders.internal/tools/delete_record",
                        },
                        {"name": "lookup", "url": "https://orders.internal/tools/lookup"},
                    ],
                }
            ],
        },
    },
    "knowledge-documents": {
        "redis": {"url": BASE_REDIS_URL},
        "knowledge": {"documents": {"returns.md": "Returns are accepted within 30 days.\n", "shipping.md": "Ships in 5 days."}},
        "config": {"knowledge": {"top_k": 4}},
    },
    "knowledge-existing-configmap": {"redis": {"url": BASE_REDIS_URL}, "knowledge": {"existingConfigMap": "kb"}},
    "widget": {
        "redis": {"url": BASE_REDIS_URL},
        "existingSecret": "switchboard-secrets",
        "config": {
            "widget": {"enabled": True},
            "http": {"allowed_origins": ["https://shop.example", "https://*.shop.example"]},
            "llm": {"org_keys": {"acme": "ACME_OPENAI_KEY"}},
            "agents": [{"id": "shop-bot", "name": "Shop", "allowed_origins": ["https://shop.example"]}],
        },
    },
    "external-redis-cluster": {
        "redis": {"url": "redis-cluster://redis-0.redis:6379,redis-1.redis:6379,redis-2.redis:6379"},
        "replicaCount": 4,
    },
    "sentinel-url-in-secret": {
        "redis": {"urlFromExistingSecret": True},
        "existingSecret": "switchboard-secrets",
        "drain": {"preStopSeconds": 0, "pauseSeconds": 2, "timeoutSeconds": 60},
        "terminationGracePeriodSeconds": 90,
        "topologySpreadConstraints": [],
    },
    "single-pod-in-memory": {"replicaCount": 1, "redis": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
}

# Value sets that must be refused, with a fragment the error message has to contain (so that each is refused
# for the intended reason, not by accident).
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "replicaCount: \"two\"": ({"replicaCount": "two", "redis": {"url": BASE_REDIS_URL}}, "replicaCount"),
    "unknown top-level key": ({"replicas": 3, "redis": {"url": BASE_REDIS_URL}}, "replicas"),
    "pathType: Bogus": (
        {
            "redis": {"url": BASE_REDIS_URL},
            "ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": [{"path": "/", "pathType": "Bogus"}]}]},
        },
        "pathType",
    ),
    "unknown key in ingress": ({"redis": {"url": BASE_REDIS_URL}, "ingress": {"enable": True}}, "enable"),
    "ingress with anonymous auth": (
        {
            "redis": {"url": BASE_REDIS_URL},
            "ingress": {"enabled": True, "hosts": [{"host": "a.example", "paths": [{"path": "/", "pathType": "Prefix"}]}]},
        },
        "anonymous",
    ),
    "secret in values (llm.api_key)": (
        {"redis": {"url": BASE_REDIS_URL}, "config": {"llm": {"api_key": "sk-not-here"}}},
        "api_key",
    ),
    "widget secret in values": (
        {"redis": {"url": BASE_REDIS_URL}, "config": {"agents": [{"id": "a", "name": "A", "widget_secret": "x" * 40}]}},
        "widget_secret",
    ),
    "bad allowed origin": (
        {"redis": {"url": BASE_REDIS_URL}, "config": {"http": {"allowed_origins": ["shop.example/path"]}}},
        "allowed_origins",
    ),
    "unknown config key": ({"redis": {"url": BASE_REDIS_URL}, "config": {"limits": {"max_frame": 1}}}, "max_frame"),
    "config integer as string": (
        {"redis": {"url": BASE_REDIS_URL}, "config": {"turn": {"lease_ms": "10s"}}},
        "lease_ms",
    ),
    "redis.url with http scheme": ({"redis": {"url": "http://redis:6379"}}, "url"),
    "sentinel URL without master": ({"redis": {"url": "redis-sentinel://s:26379"}}, "url"),
    "replicas > 1 without Redis": ({"replicaCount": 3, "redis": {"enabled": False}}, "in-memory mode is single-pod"),
    "autoscaling without Redis": (
        {"replicaCount": 1, "redis": {"enabled": False}, "autoscaling": {"enabled": True}},
        "autoscaling.enabled needs Redis",
    ),
    "urlFromExistingSecret without existingSecret": ({"redis": {"urlFromExistingSecret": True}}, "needs existingSecret"),
    "grace period shorter than drain": (
        {"redis": {"url": BASE_REDIS_URL}, "terminationGracePeriodSeconds": 25},
        "terminationGracePeriodSeconds",
    ),
    "drain pause longer than drain timeout": (
        {"redis": {"url": BASE_REDIS_URL}, "drain": {"preStopSeconds": 5, "pauseSeconds": 30, "timeoutSeconds": 10}},
        "drain.pauseSeconds",
    ),
    "jwt without a key": ({"redis": {"url": BASE_REDIS_URL}, "config": {"auth": {"mode": "jwt"}}}, "auth.mode=jwt"),
    "bad tool name": (
        {
            "redis": {"url": BASE_REDIS_URL},
            "config": {"agents": [{"id": "a", "name": "A", "tools": [{"name": "bad name", "url": "http://x/t"}]}]},
        },
        "name",
    ),
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
            msg = str(e).strip() or type(e).__name__
            if not isinstance(e, (AssertionError, helm.HelmError, subprocess.CalledProcessError)):
                msg += "\n" + traceback.format_exc()
            self.failed.append(name)
            print(f"FAIL  {name}\n      " + msg.replace("\n", "\n      "), flush=True)
            return
        self.passed += 1
        print(f"ok    {name}" + (f" ({detail})" if detail else ""), flush=True)

    def skip(self, name: str, why: str) -> None:
        self.skipped.append(name)
        print(f"SKIP  {name}: {why}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc:
                docs.append(doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)


def container(deploy: dict[str, Any], name: str = "switchboard") -> dict[str, Any]:
    return next(c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def validate_k8s(venv_bin: Path, label: str, docs: list[dict[str, Any]], workdir: Path) -> str:
    """kubernetes-validate --strict on every document except known CRDs; any warning counts as a failure."""
    out_dir = workdir / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, skipped = [], []
    for i, doc in enumerate(docs):
        if doc["kind"] in CRD_KINDS:
            skipped.append(doc["kind"])
            continue
        f = out_dir / f"{i:02d}-{doc['kind']}.yaml"
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(f))
    assert files, "nothing to validate"
    proc = subprocess.run(
        [str(venv_bin / "kubernetes-validate"), "--strict", "--kubernetes-version", KUBE_VERSION, "--quiet", *files],
        capture_output=True,
        text=True,
    )
    output = (proc.stdout + proc.stderr).strip()
    # kubernetes-validate exits 0 on a kind it has no schema for (a WARN): that would hide a typo'd apiVersion.
    assert proc.returncode == 0 and not output, f"kubernetes-validate (exit {proc.returncode}):\n{output}"
    note = f"{len(files)} objects valid against Kubernetes {KUBE_VERSION}"
    if skipped:
        note += "; skipped CRD " + ", ".join(f"{k} ({CRD_KINDS[k]})" for k in sorted(set(skipped)))
    return note


# ---------------------------------------------------------------------------------------------------------------
# Chart checks


def check_common(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    merged = merged_values(values)
    deploy = find(docs, "Deployment", RELEASE)
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, psc
    assert psc["seccompProfile"]["type"] == "RuntimeDefault", psc
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, csc
    assert csc["capabilities"]["drop"] == ["ALL"], csc
    assert pod["enableServiceLinks"] is False, "service links would inject SWITCHBOARD_* variables"
    assert c["args"] == ["serve", "--config", "/etc/switchboard/config.toml"], c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health", c["livenessProbe"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", c["readinessProbe"]
    assert c["ports"] == [{"name": "http", "containerPort": 8787, "protocol": "TCP"}], c["ports"]
    assert env_of(c)["SWITCHBOARD_BIND"] == "0.0.0.0:8787"
    assert "checksum/config" in deploy["spec"]["template"]["metadata"]["annotations"]
    drain = merged["drain"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > drain["preStopSeconds"] + drain["timeoutSeconds"] + 3, f"grace {grace} vs drain {drain}"
    if merged.get("terminationGracePeriodSeconds") is None:  # Helm drops null values when merging
        assert grace == drain["preStopSeconds"] + drain["timeoutSeconds"] + 10, grace
    if drain["preStopSeconds"] > 0:
        assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": drain["preStopSeconds"]}}, c.get("lifecycle")
    else:
        assert "lifecycle" not in c, c.get("lifecycle")
    svc = find(docs, "Service", RELEASE)
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["name"] == "http"
    assert svc["spec"]["ports"][0]["port"] == 8787
    cfg = config_of(docs)
    assert cfg["drain"] == {"pre_stop_s": drain["pauseSeconds"], "timeout_s": drain["timeoutSeconds"]}, cfg["drain"]
    for forbidden in ("bind", "redis_url"):
        assert forbidden not in cfg, f"{forbidden} must not be in the config file"
    if merged["podDisruptionBudget"]["enabled"]:
        assert find(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(copy.deepcopy(values))


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    text = find(docs, "ConfigMap", RELEASE)["data"]["config.toml"]
    return tomllib.loads(text)


def check_set(name: str, docs: list[dict[str, Any]], values: dict[str, Any]) -> str:
    check_common(docs, values)
    deploy = find(docs, "Deployment", RELEASE)
    c = container(deploy)
    env = env_of(c)
    strategy = deploy["spec"]["strategy"]["type"]
    if name == "defaults":
        # No values at all: two pods on the in-chart Redis, anonymous auth allowed only inside the cluster.
        assert deploy["spec"]["replicas"] == 2 and strategy == "RollingUpdate"
        assert env["SWITCHBOARD_REDIS_URL"] == f"redis://{RELEASE}-redis:6379", env
        find(docs, "Deployment", f"{RELEASE}-redis")
        assert not any(d["kind"] == "Ingress" for d in docs), "no Ingress by default"
    elif name == "defaults+redis.url":
        assert kinds(docs) == sorted(
            f"{k}/{RELEASE}" for k in ("ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount")
        ), kinds(docs)
        assert deploy["spec"]["replicas"] == 2 and strategy == "RollingUpdate"
        assert env["SWITCHBOARD_REDIS_URL"] == BASE_REDIS_URL
        keys = [t["topologyKey"] for t in deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]]
        assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"], keys
        assert "envFrom" not in c
    elif name == "autoscaling":
        assert "replicas" not in deploy["spec"], "the HPA owns replicas"
        hpa = find(docs, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert metrics["Pods"]["pods"]["metric"]["name"] == "switchboard_connections"
        assert metrics["Pods"]["pods"]["target"]["averageValue"] == "500"
    elif name == "ingress":
        ing = find(docs, "Ingress")
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert all(ing["metadata"]["annotations"][k] == v for k, v in NGINX_WS.items())
        path = ing["spec"]["rules"][0]["http"]["paths"][0]
        assert path["pathType"] == "Prefix" and path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}
        assert ing["spec"]["tls"][0]["secretName"] == "chat-tls"
    elif name == "in-chart-redis+everything":
        find(docs, "Deployment", f"{RELEASE}-redis")
        assert find(docs, "Service", f"{RELEASE}-redis")["spec"]["ports"][0]["port"] == 6379
        assert env["SWITCHBOARD_REDIS_URL"] == OVERLAY_REDIS_URL, env
        assert env["RUST_LOG"] == "info"
        assert c["envFrom"] == [{"secretRef": {"name": "switchboard-secrets"}}]
        find(docs, "NetworkPolicy", RELEASE)
        find(docs, "NetworkPolicy", f"{RELEASE}-redis")
        sm = find(docs, "ServiceMonitor")
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics" and sm["spec"]["endpoints"][0]["port"] == "http"
        dash = find(docs, "ConfigMap", f"{RELEASE}-dashboard")
        assert json.loads(dash["data"]["switchboard.json"])["uid"] == "switchboard"
        cfg = config_of(docs)
        agent = cfg["agents"][0]
        want = GOOD[name]["config"]["agents"][0]
        assert agent["system_prompt"] == want["system_prompt"], agent["system_prompt"]
        assert agent["tools"][0]["parameters"] == want["tools"][0]["parameters"], agent["tools"][0]
        assert cfg["auth"]["mode"] == "jwt" and cfg["llm"]["base_url"] == "https://llm.internal/v1"
    elif name.startswith("knowledge-"):
        # Documents come from a ConfigMap mounted read-only where config.knowledge.dir points.
        mount = next(m for m in c["volumeMounts"] if m["name"] == "knowledge")
        assert mount["mountPath"] == "/var/lib/switchboard/knowledge" and mount["readOnly"] is True, mount
        volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "knowledge")
        cfg = config_of(docs)
        assert cfg["knowledge"]["dir"] == mount["mountPath"], cfg["knowledge"]
        if name == "knowledge-documents":
            cm = find(docs, "ConfigMap", f"{RELEASE}-knowledge")
            assert volume["configMap"]["name"] == cm["metadata"]["name"]
            assert cm["data"] == GOOD[name]["knowledge"]["documents"], cm["data"]
            assert cfg["knowledge"]["top_k"] == 4, "the chart keeps the other knowledge keys"
        else:
            assert volume["configMap"]["name"] == "kb", volume
    elif name == "widget":
        cfg = config_of(docs)
        assert cfg["widget"]["enabled"] is True and cfg["http"]["allowed_origins"][1] == "https://*.shop.example"
        assert cfg["agents"][0]["allowed_origins"] == ["https://shop.example"]
        assert cfg["llm"]["org_keys"] == {"acme": "ACME_OPENAI_KEY"}
    elif name == "external-redis-cluster":
        assert deploy["spec"]["replicas"] == 4
        assert env["SWITCHBOARD_REDIS_URL"].startswith("redis-cluster://")
    elif name == "sentinel-url-in-secret":
        assert "SWITCHBOARD_REDIS_URL" not in env and c["envFrom"][0]["secretRef"]["name"] == "switchboard-secrets"
        assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
        assert "topologySpreadConstraints" not in deploy["spec"]["template"]["spec"]
        assert strategy == "RollingUpdate"
    elif name == "single-pod-in-memory":
        assert deploy["spec"]["replicas"] == 1 and "SWITCHBOARD_REDIS_URL" not in env
        assert strategy == "Recreate", "one in-memory pod must be replaced, not doubled"
        assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    # Every number in the config must be a TOML integer: the application's integer keys refuse floats.
    floats = [k for k, v in flatten(config_of(docs)) if isinstance(v, float)]
    assert not floats, f"float values in config.toml: {floats}"
    return f"{len(docs)} objects: " + ", ".join(sorted({d['kind'] for d in docs}))


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in flatten(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(obj, list):
        return [kv for i, v in enumerate(obj) for kv in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, obj)]


def check_config_with_binary(binary: Path, docs: list[dict[str, Any]], values: dict[str, Any], workdir: Path) -> str:
    """The rendered config.toml plus the pod's environment must be accepted by the application itself."""
    path = workdir / "config.toml"
    path.write_text(find(docs, "ConfigMap", RELEASE)["data"]["config.toml"])
    c = container(find(docs, "Deployment", RELEASE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update({k: v for k, v in env_of(c).items() if k.startswith("SWITCHBOARD_") and isinstance(v, str)})
    if c.get("envFrom"):
        # Stand-ins for what existingSecret holds in a real cluster.
        env["SWITCHBOARD_LLM__API_KEY"] = "sk-stand-in"
        env["SWITCHBOARD_AUTH__JWT_HS256_SECRET"] = "stand-in-jwt-secret-of-some-length"
        env["SWITCHBOARD_AUTH__PUBLISH_KEYS"] = "stand-in-publish-key-1,stand-in-publish-key-2"
        for var in config_of(docs).get("llm", {}).get("org_keys", {}).values():
            env[var] = "sk-org-stand-in"
        if values.get("redis", {}).get("urlFromExistingSecret"):
            env["SWITCHBOARD_REDIS_URL"] = "redis-sentinel://sentinel-0:26379,sentinel-1:26379/mymaster"
    if config_of(docs).get("knowledge", {}).get("dir"):
        # Stand-in for the knowledge ConfigMap's mount: its files (or one for an existing ConfigMap) in a local dir.
        kdir = workdir / "knowledge"
        kdir.mkdir()
        cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-knowledge"]
        for fname, text in (cms[0]["data"] if cms else {"doc.md": "A stand-in document."}).items():
            (kdir / fname).write_text(text)
        env["SWITCHBOARD_KNOWLEDGE__DIR"] = str(kdir)
    proc = subprocess.run(
        [str(binary), "check-config", "--config", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, f"switchboard check-config refused the rendered config:\n{proc.stderr.strip()}"
    effective = tomllib.loads(proc.stdout)
    assert effective["bind"] == "0.0.0.0:8787", effective["bind"]
    return "accepted by switchboard check-config"


def check_bad(values: dict[str, Any], fragment: str) -> str:
    try:
        docs = render(values)
    except helm.HelmError as e:
        msg = str(e)
        assert fragment in msg, f"refused, but not for the expected reason ({fragment!r}):\n{msg}"
        short = " ".join(msg.split())
        short = re.sub(r"^values don't meet the specifications of the schema\(s\) in the following chart\(s\): \S+: ", "schema: ", short)
        short = re.sub(r"^execution error at \([^)]*\): ", "template: ", short)
        return "refused by " + (short if len(short) <= 200 else short[:197] + "...")
    raise AssertionError(f"bad values rendered {len(docs)} objects instead of being refused")


def check_lint(values: dict[str, Any]) -> str:
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, kube_version=f"v{KUBE_VERSION}")
    # Severity: 1 info, 2 warning, 3 error. --strict makes warnings fail too, as the CLI does.
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], json.dumps(report, indent=2)
    infos = [m["error"] for m in report["messages"]]
    return "lint --strict clean" + (f"; info: {'; '.join(infos)}" if infos else "")


# ---------------------------------------------------------------------------------------------------------------
# k8s/: generated from the chart, checked for drift


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:  # noqa: ARG002
        # Indented block sequences, as kubectl and most hand-written manifests have them.
        super().increase_indent(flow, False)


def _str_repr(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_repr)


def dump(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=120) for d in docs)


def plain(doc: dict[str, Any]) -> dict[str, Any]:
    """A rendered object as a plain manifest: no Helm bookkeeping labels."""
    doc = copy.deepcopy(doc)

    def relabel(labels: dict[str, str] | None) -> None:
        if labels:
            labels.pop("helm.sh/chart", None)
            if labels.get("app.kubernetes.io/managed-by") == "Helm":
                labels["app.kubernetes.io/managed-by"] = "kustomize"

    relabel(doc["metadata"].get("labels"))
    tmpl = doc.get("spec", {}).get("template", {}).get("metadata")
    if tmpl:
        relabel(tmpl.get("labels"))
    return doc


GENERATED = (
    "# Generated from helm/switchboard (default values, release name `{release}`) by\n"
    "# `scripts/check-packaging --update-k8s`; change the chart and regenerate rather than editing this file.\n"
)


def deployment_patch(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A strategic-merge patch of the release's Deployment: fields of its `switchboard` container (and volumes)."""
    pod: dict[str, Any] = {"containers": [{"name": "switchboard", **container}]}
    if volumes:
        pod["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": RELEASE},
            "spec": {"template": {"spec": pod}}}


def generate_k8s() -> dict[str, str]:
    header = GENERATED.format(release=RELEASE)
    base_docs = [plain(d) for d in render(GOOD["defaults+redis.url"])]
    files: dict[str, str] = {}
    resources = []
    config_map = None
    for doc in base_docs:
        if doc["kind"] == "ConfigMap":
            config_map = doc
            continue
        if doc["kind"] == "Deployment":
            # kustomize's configMapGenerator names the ConfigMap after its content, which rolls the pods on a
            # config change; the chart's checksum annotation would go stale here.
            doc["spec"]["template"]["metadata"]["annotations"].pop("checksum/config")
            if not doc["spec"]["template"]["metadata"]["annotations"]:
                del doc["spec"]["template"]["metadata"]["annotations"]
        fname = {"PodDisruptionBudget": "pdb.yaml"}.get(doc["kind"], doc["kind"].lower() + ".yaml")
        files[f"base/{fname}"] = header + dump([doc])
        resources.append(fname)
    assert config_map is not None
    files["base/config.toml"] = header + config_map["data"]["config.toml"]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(resources),
        "configMapGenerator": [
            {
                "name": config_map["metadata"]["name"],
                "files": ["config.toml"],
                "options": {"labels": config_map["metadata"]["labels"]},
            }
        ],
    }
    files["base/kustomization.yaml"] = (
        header
        + "# Plain manifests equal to the chart's defaults, with an external Redis at a placeholder URL: point\n"
        + f"# SWITCHBOARD_REDIS_URL at your Redis with a patch (see ../overlays/with-redis), or use the chart.\n"
        + "# Secrets: add `envFrom: [{secretRef: {name: ...}}]` to the container, as the chart's existingSecret does.\n"
        + dump([kustomization])
    )
    redis_docs = [
        plain(d)
        for d in render(GOOD["in-chart-redis+everything"] | {"networkPolicy": {"enabled": False}})
        if d["metadata"]["name"] == f"{RELEASE}-redis" and d["kind"] in ("Deployment", "Service")
    ]
    assert len(redis_docs) == 2, kinds(redis_docs)
    files["overlays/with-redis/redis.yaml"] = header + dump(redis_docs)
    patch = deployment_patch({"env": [{"name": "SWITCHBOARD_REDIS_URL", "value": OVERLAY_REDIS_URL}]})
    files["overlays/with-redis/redis-url-patch.yaml"] = header + dump([patch])
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base", "redis.yaml"],
        "patches": [{"path": "redis-url-patch.yaml"}],
    }
    # Knowledge documents: the chart's ConfigMap mount, as an overlay whose ConfigMap is generated from files.
    kdocs = render(GOOD["knowledge-documents"])
    kdeploy = find(kdocs, "Deployment", RELEASE)
    kvolume = next(v for v in kdeploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "knowledge")
    kmount = next(m for m in container(kdeploy)["volumeMounts"] if m["name"] == "knowledge")
    kpatch = deployment_patch(
        {"env": [{"name": "SWITCHBOARD_KNOWLEDGE__DIR", "value": kmount["mountPath"]}], "volumeMounts": [kmount]},
        volumes=[kvolume],
    )
    files["overlays/with-knowledge/knowledge-patch.yaml"] = header + dump([kpatch])
    for fname, text in find(kdocs, "ConfigMap", f"{RELEASE}-knowledge")["data"].items():
        files[f"overlays/with-knowledge/knowledge/{fname}"] = text
    koverlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base"],
        "configMapGenerator": [
            {
                "name": kvolume["configMap"]["name"],
                "files": sorted(f"knowledge/{f}" for f in find(kdocs, "ConfigMap", f"{RELEASE}-knowledge")["data"]),
            }
        ],
        "patches": [{"path": "knowledge-patch.yaml"}],
    }
    files["overlays/with-knowledge/kustomization.yaml"] = (
        header
        + "# The base plus knowledge documents for the built-in index: a ConfigMap generated from the files under\n"
        + "# knowledge/ (replace them with yours), mounted read-only where SWITCHBOARD_KNOWLEDGE__DIR points.\n"
        + dump([koverlay])
    )
    files["overlays/with-redis/kustomization.yaml"] = (
        header
        + "# The base plus a single, unpersisted Redis in the same namespace, for trying the scaled mode out\n"
        + "# (the chart's redis.enabled=true). Production wants a managed or replicated Redis instead.\n"
        + dump([overlay])
    )
    return files


def check_k8s_drift(update: bool) -> str:
    files = generate_k8s()
    if update:
        for rel, text in files.items():
            path = K8S / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return f"wrote {len(files)} files under k8s/"
    on_disk = {str(p.relative_to(K8S)) for p in K8S.rglob("*") if p.is_file()}
    stale = sorted(rel for rel, text in files.items() if not (K8S / rel).is_file() or (K8S / rel).read_text() != text)
    extra = sorted(on_disk - set(files))
    assert not stale and not extra, (
        f"k8s/ differs from the chart (stale: {stale}, unexpected: {extra}); "
        "run scripts/check-packaging --update-k8s and review the diff"
    )
    return f"{len(files)} files equal to the chart's rendering"


def check_kustomize(kubectl: str, venv_bin: Path, workdir: Path, target: str) -> str:
    proc = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize k8s/{target} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    deploy = find(docs, "Deployment", RELEASE)
    env = env_of(container(deploy))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and not d["metadata"]["name"].startswith(f"{RELEASE}-knowledge"))
    assert cm["metadata"]["name"].startswith(f"{RELEASE}-"), "configMapGenerator adds a content hash"
    volumes = deploy["spec"]["template"]["spec"]["volumes"]
    config_volume = next(v for v in volumes if v["name"] == "config")
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"], "Deployment must use the generated ConfigMap"
    tomllib.loads(cm["data"]["config.toml"])
    if target == "overlays/with-knowledge":
        kcm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(f"{RELEASE}-knowledge"))
        kvol = next(v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "knowledge")
        assert kvol["configMap"]["name"] == kcm["metadata"]["name"], "the mount uses the generated ConfigMap"
        assert env["SWITCHBOARD_KNOWLEDGE__DIR"] == "/var/lib/switchboard/knowledge", env
        assert "returns.md" in kcm["data"], kcm["data"]
    elif target == "base":
        assert env["SWITCHBOARD_REDIS_URL"] == BASE_REDIS_URL, env
    else:
        assert env["SWITCHBOARD_REDIS_URL"] == OVERLAY_REDIS_URL, env
        find(docs, "Deployment", f"{RELEASE}-redis")
        find(docs, "Service", f"{RELEASE}-redis")
    return validate_k8s(venv_bin, f"kustomize-{target}", docs, workdir)


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile and dashboard


def check_hadolint(venv_bin: Path) -> str:
    proc = subprocess.run([str(venv_bin / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"
    return "hadolint clean"


def check_dockerfile_matches_chart() -> str:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M), "runtime USER must be numeric 10001"
    assert re.search(r"^EXPOSE 8787$", text, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/switchboard"]' in text and 'CMD ["serve"]' in text
    assert "cargo build --release --locked" in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"target/", ".git", ".venv"} <= set(ignore), ignore
    with helm.Chart.load(CHART) as chart:
        psc = chart.values["podSecurityContext"]
    assert psc["runAsUser"] == 10001 and psc["runAsGroup"] == 10001, psc
    return "USER, EXPOSE, ENTRYPOINT and .dockerignore agree with the chart"


def check_dashboard() -> str:
    dash = json.loads((CHART / "dashboards" / "switchboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"switchboard_[a-z_]+", e)}
    # README's metrics table is the list the server is tested to serve (tests/protocol/http.rs scrapes and parses it).
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- metrics-table")[1].split("<!-- end metrics-table")[0]
    defined = set(re.findall(r"`(switchboard_[a-z_]+)", table))
    assert defined, "no metric names found in README.md's metrics table"
    unknown, missing = sorted(used - defined), sorted(defined - used)
    assert not unknown, f"dashboard queries metrics that README.md's table does not list: {unknown}"
    assert not missing, f"metrics in README.md's table without a dashboard panel: {missing}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    return f"{len(dash['panels'])} panels cover all {len(defined)} metrics"


# ---------------------------------------------------------------------------------------------------------------


def find_binary() -> Path | None:
    explicit = os.environ.get("SWITCHBOARD_BIN_FOR_CHECKS")
    candidates = [Path(explicit)] if explicit else [ROOT / "target" / "release" / "switchboard", ROOT / "target" / "debug" / "switchboard"]
    existing = [p for p in candidates if p.is_file() and os.access(p, os.X_OK)]
    # The newest build is the one that matches the sources best.
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-k8s", action="store_true", help="regenerate k8s/ from the chart")
    parser.add_argument("--kubectl", default="", help="kubectl to run `kubectl kustomize` with; empty = skip")
    args = parser.parse_args()
    venv_bin = Path(sys.executable).parent
    report = Report()
    print(f"helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()}), Kubernetes schemas {KUBE_VERSION}")

    report.run("Dockerfile: hadolint", lambda: check_hadolint(venv_bin))
    report.run("Dockerfile: agrees with the chart", check_dockerfile_matches_chart)
    report.run("dashboard: metrics of src/metrics.rs", check_dashboard)

    binary = find_binary()
    with tempfile.TemporaryDirectory(prefix="check-packaging-") as tmp:
        work = Path(tmp)
        for name, values in GOOD.items():
            report.run(f"chart [{name}]: helm lint --strict", lambda v=values: check_lint(v))
            docs: list[dict[str, Any]] = []

            def rendered(n: str = name, v: dict[str, Any] = values) -> str:
                docs.extend(render(v))
                return check_set(n, docs, v)

            report.run(f"chart [{name}]: render", rendered)
            if not docs:
                continue
            report.run(f"chart [{name}]: kubernetes-validate", lambda n=name, d=docs: validate_k8s(venv_bin, n, d, work))
            if binary:
                sub = work / f"cfg-{len(report.failed)}-{re.sub(r'[^A-Za-z0-9]+', '_', name)}"
                sub.mkdir()
                report.run(
                    f"chart [{name}]: config.toml",
                    lambda d=docs, v=values, s=sub: check_config_with_binary(binary, d, v, s),
                )
        if not binary:
            report.skip(
                "rendered config.toml accepted by `switchboard check-config`",
                "no built binary under target/ (this script never runs cargo; build first, or set "
                "SWITCHBOARD_BIN_FOR_CHECKS); config.toml was still parsed as TOML and type-checked",
            )
        else:
            print(f"      (config checks used {binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary})")

        for name, (values, fragment) in BAD.items():
            report.run(f"bad values refused [{name}]", lambda v=values, f=fragment: check_bad(v, f))

        report.run("k8s/ equals the chart's rendering", lambda: check_k8s_drift(args.update_k8s))
        if args.kubectl:
            for target in ("base", "overlays/with-redis", "overlays/with-knowledge"):
                report.run(f"kubectl kustomize k8s/{target}", lambda t=target: check_kustomize(args.kubectl, venv_bin, work, t))
        else:
            for target in ("base", "overlays/with-redis", "overlays/with-knowledge"):
                report.skip(f"kubectl kustomize k8s/{target}", "NO kubectl AVAILABLE: kustomize output NOT validated")

    total = report.passed + len(report.failed)
    status = "FAILED" if report.failed else "PASSED"
    print()
    if report.failed:
        print("failed checks:\n  - " + "\n  - ".join(report.failed))
    if report.skipped:
        print("skipped checks:\n  - " + "\n  - ".join(report.skipped))
    print(
        f"check-packaging {status}: {report.passed} of {total} checks passed, {len(report.failed)} failed, "
        f"{len(report.skipped)} skipped"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
