"""The deploy artifacts agree with the code: ports, probe paths, config and state mounts, exit codes."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from driftline.errors import ConfigError, KafkaSecurityError, PublishError
from driftline.settings import MetricsSettings, Settings
from driftline.stream.kafka.seam import TransactionError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG = "/etc/driftline/driftline.yaml"


def _k8s() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_k8s_manifests_match_the_service() -> None:
    k = _k8s()
    assert set(k) == {"ConfigMap", "StatefulSet", "Service", "PodMonitor", "Secret"}
    sts = k["StatefulSet"]["spec"]
    pod = sts["template"]["spec"]
    (c,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    # the config the pod runs is valid, and serves metrics on the port the manifests use, on the pod IP
    cfg_text = k["ConfigMap"]["data"]["driftline.yaml"]
    settings = Settings(**yaml.safe_load(cfg_text))
    assert port == settings.metrics.port == MetricsSettings().port
    assert settings.metrics.host == "0.0.0.0"
    http_src = (DEPLOY.parent / "monitoring" / "http.py").read_text()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and '"/healthz"' in http_src
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and '"/readyz"' in http_src
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == "metrics"
    # config mount: the ConfigMap key lands where --config points
    assert c["args"] == ["run", "--config", CONFIG]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"] + "/driftline.yaml" == CONFIG
    assert volumes["config"]["configMap"]["name"] == k["ConfigMap"]["metadata"]["name"]
    # checkpoints on the persistent volume
    assert settings.checkpoint.directory is not None
    assert settings.checkpoint.directory.startswith(mounts["state"] + "/")
    # one state volume per pod (one writer per checkpoint directory), rolled one pod at a time
    assert [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]] == ["state"] and "state" not in volumes
    assert sts["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["updateStrategy"]["type"] == "RollingUpdate" and sts["serviceName"] == k["Service"]["metadata"]["name"]
    assert k["Service"]["spec"]["clusterIP"] == "None"
    # the pod's stable name is its static membership id
    env = {e["name"]: e for e in c["env"]}
    assert env["DRIFTLINE_KAFKA__INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert Settings(**{**yaml.safe_load(cfg_text), "kafka": {**yaml.safe_load(cfg_text)["kafka"],
                                                             "instance_id": "driftline-0"}}).kafka.leave_group_on_stop
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # SIGTERM drains within the grace period
    assert pod["terminationGracePeriodSeconds"] >= 30
    svc_port = k["Service"]["spec"]["ports"][0]
    assert svc_port["port"] == port and svc_port["targetPort"] == "metrics"
    assert k["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    labels = sts["selector"]["matchLabels"]
    assert k["Service"]["spec"]["selector"] == labels == k["PodMonitor"]["spec"]["selector"]["matchLabels"]


def test_dockerfile_runs_as_non_root_with_every_package_and_the_metrics_port() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(rf"^EXPOSE\s+{MetricsSettings().port}\b", text, re.M)
    assert f'"--config", "{CONFIG}"' in text and f"COPY deploy/driftline.example.yaml {CONFIG}" in text
    dirs = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for src in {d.split("/")[0] for d in dirs.values()}:  # a nested package (stream/kafka) comes with its parent
        assert re.search(rf"^COPY {src} {src}$", text, re.M), f"the image misses package dir {src}"
    assert "DRIFTLINE_METRICS__HOST=0.0.0.0" in text and "/healthz" in text


def test_systemd_unit_runs_the_service_and_does_not_restart_into_a_config_error() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "systemd" / "driftline.service")
    svc = unit["Service"]
    assert svc["ExecStart"].endswith(f"driftline run --config {CONFIG}")
    assert svc["KillSignal"] == "SIGTERM" and svc["User"] == "driftline"
    assert svc["RestartPreventExitStatus"] == "2"
    assert ConfigError.exit_code == KafkaSecurityError.exit_code == 2  # not restarted into
    assert PublishError.exit_code == TransactionError.exit_code == 1  # restarted: the batch is consumed again


def test_compose_wires_kafka_driftline_prometheus_and_grafana_with_the_shipped_files() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    s = compose["services"]
    assert {"kafka", "driftline", "demo-producer", "prometheus", "grafana"} <= set(s)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in s["driftline"]["volumes"]}
    cfg = Settings(**yaml.safe_load((DEPLOY / mounts[CONFIG]).read_text()))
    assert s["driftline"]["command"] == ["run", "--config", CONFIG]
    assert f"127.0.0.1:{cfg.metrics.port}:{cfg.metrics.port}" in s["driftline"]["ports"]
    assert cfg.checkpoint.directory is not None and cfg.checkpoint.directory.startswith("/var/lib/driftline/")
    prom = yaml.safe_load((DEPLOY / "prometheus" / "compose.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"driftline:{cfg.metrics.port}"]
    grafana = {m.split(":")[1]: m.split(":")[0] for m in s["grafana"]["volumes"]}
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "driftline.yaml").read_text())
    assert grafana[provider["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    for service in s.values():  # published ports stay on loopback
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_k8s_secret_mount_serves_the_secured_config() -> None:
    """The commented SASL_SSL lines of the ConfigMap, uncommented, are a valid config whose CA and password
    files are keys of the shipped Secret, where the StatefulSet mounts it (readable by the pod's group)."""
    k = _k8s()
    pod = k["StatefulSet"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mount = {m["name"]: m for m in c["volumeMounts"]}["kafka-secrets"]
    volume = {v["name"]: v for v in pod["volumes"]}["kafka-secrets"]["secret"]
    assert volume["secretName"] == k["Secret"]["metadata"]["name"] and volume["optional"] is True
    assert mount["readOnly"] is True and volume["defaultMode"] & 0o040 and not volume["defaultMode"] & 0o004
    text = k["ConfigMap"]["data"]["driftline.yaml"]
    secured = re.sub(r"(?m)^(\s*)# ((?:security_protocol|ssl|sasl):)", r"\1\2", text)
    assert secured != text
    kafka = Settings(**yaml.safe_load(secured)).kafka
    assert kafka.security_protocol == "SASL_SSL"
    files = [kafka.ssl.cafile, kafka.sasl.password_file]
    for f in files:
        assert f is not None and f.startswith(mount["mountPath"] + "/")
        assert f.rsplit("/", 1)[1] in k["Secret"]["stringData"]
