"""deploy/ cannot silently rot: schemas, commands that exist, probes, metrics that exist.

Docker and Kubernetes cannot run here; these checks read the files: the Kubernetes manifests
against the Kubernetes schemas (``kubernetes-validate``), the Compose file against the Compose
specification's JSON schema (shipped by ``check-jsonschema``). ``promtool`` (Debian
package ``prometheus``) checks and unit-tests the alert rules when it is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from services.cli import app
from services.registry import SERVICES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in _yaml_docs(K8S / name)]


def _check_command(argv: list[str]) -> None:
    """``argv`` (after the ``waypoint`` entry point) names a real command, service and process."""
    command = get_command(app)
    assert argv[0] in command.commands, f"no `waypoint {argv[0]}` command"  # type: ignore[attr-defined]
    if argv[0] == "serve":
        assert argv[1] in SERVICES
    if argv[0] == "worker":
        assert argv[2] in SERVICES[argv[1]].processes, f"{argv[1]} has no process {argv[2]}"
    if argv[0] == "keys":
        assert argv[1] in command.commands["keys"].commands  # type: ignore[attr-defined]


def _shell_commands(line: str) -> list[list[str]]:
    return [part.split()[1:] for part in line.split("&&") if part.split()[0] == "waypoint"]


def _metric_names_in_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")]:
        names.update(re.findall(r"\"(waypoint_[a-z0-9_]+)\"", path.read_text()))
    return names


def _metric_names_in(text: str) -> set[str]:
    used = set(re.findall(r"\bwaypoint_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in used}


def test_compose_runs_every_registered_process_with_real_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "kafka", "init", "prometheus", "grafana"} <= services.keys()
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    for name, spec in SERVICES.items():
        api = services[f"{name}-api"]
        assert api["command"][:2] == ["serve", name]
        assert f"{spec.port}:{spec.port}" in api["ports"]
        assert f"{spec.port}/readyz" in " ".join(api["healthcheck"]["test"])
        for process in spec.processes:
            worker = services[f"{name}-{process}"]
            assert worker["command"][:3] == ["worker", name, process]
            assert "--metrics-port" in worker["command"]
    for service in services.values():
        if "command" in service and service.get("image", "").startswith("waypoint"):
            if service.get("entrypoint") == ["sh", "-c"]:
                for argv in _shell_commands(service["command"][0]):
                    _check_command(argv)
            else:
                _check_command(service["command"])
    init = services["init"]["command"][0]
    assert "waypoint migrate" in init
    assert "waypoint create-topics" in init


def test_kubernetes_manifests_are_consistent() -> None:
    docs = _manifests()
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = kinds["Deployment"]
    for name, spec in SERVICES.items():
        api = deployments[f"{name}-api"]["spec"]["template"]["spec"]["containers"][0]
        assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": spec.port}
        assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": spec.port}
        assert kinds["Service"][f"{name}-api"]["spec"]["ports"][0]["port"] == spec.port
        hpa = kinds["HorizontalPodAutoscaler"][f"{name}-api"]["spec"]["scaleTargetRef"]
        assert hpa["name"] in deployments
        for process in spec.processes:
            assert f"{name}-{process}" in deployments
    for deployment in deployments.values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            _check_command(container["args"])
            assert {
                e.get("configMapRef", e.get("secretRef"))["name"] for e in container["envFrom"]
            } == {
                "waypoint-config",
                "waypoint-secrets",
            }
    job = kinds["Job"]["waypoint-migrate"]["spec"]["template"]["spec"]["containers"][0]
    for argv in _shell_commands(job["args"][0]):
        _check_command(argv)
    assert kinds["ConfigMap"]["waypoint-config"]["data"]["WAYPOINT_ENV"] == "prod"


def test_kubernetes_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    """Every resource kustomize would apply, against the Kubernetes OpenAPI schemas (strict:
    an unknown field, such as a misspelt ``readinessProbe``, is an error), via PyPI's
    ``kubernetes-validate``."""
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    docs = _manifests()
    assert len(docs) >= 15
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: {where}: {error.message}")
    assert not problems, "\n".join(problems)


def test_kubernetes_validation_catches_a_broken_manifest() -> None:
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    deployment = next(d for d in _manifests() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**container, "readynessProbe": container.get("readinessProbe", {})}
    spec = {**deployment["spec"]["template"]["spec"], "containers": [broken]}
    template = {**deployment["spec"]["template"], "spec": spec}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {**deployment, "spec": {**deployment["spec"], "template": template}}, version, True
        )


def _compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, as PyPI's ``check-jsonschema`` ships it (with
    its licence, LICENSE.compose-spec, beside it)."""
    from importlib.resources import files

    schema = files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return dict(json.loads(schema.read_text()))


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    from jsonschema import Draft7Validator

    schema = _compose_schema()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # and the schema does catch mistakes
    broken = {**compose, "services": {**compose["services"], "x": {"image": 1, "portz": []}}}
    assert list(validator.iter_errors(broken))


def test_grafana_dashboard_uses_only_metrics_defined_in_code() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "waypoint.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 10
    unknown = _metric_names_in("\n".join(exprs)) - _metric_names_in_code()
    assert not unknown, f"dashboard queries metrics nobody defines: {sorted(unknown)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for path in (DEPLOY / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1


def test_alert_rules_use_only_metrics_defined_in_code() -> None:
    rules = (DEPLOY / "prometheus" / "rules" / "waypoint.rules.yml").read_text()
    groups = yaml.safe_load(rules)["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"]}
    assert {
        "WaypointConsumerLagHigh",
        "WaypointDeadLettersRising",
        "WaypointHttp5xxRate",
        "WaypointOutboxBacklog",
        "WaypointNotReady",
        "WaypointWorkerStuck",
        "WaypointConsumerBatchesFailing",
        "WaypointJourneyDeadLetters",
        "WaypointAlertsDeadLetters",
        "WaypointIngestUnprocessable",
        "WaypointEngagementNotPublished",
        "WaypointJourneyOutboxBacklog",
        "WaypointOutboxNotPublishing",
        "WaypointDeadLettersPerService",
        "WaypointWorkerRestarting",
        "WaypointRebalanceAbandonedBatches",
    } <= alerts
    exprs = "\n".join(r["expr"] for g in groups for r in g["rules"])
    unknown = _metric_names_in(exprs) - _metric_names_in_code()
    assert not unknown, f"rules use metrics nobody defines: {sorted(unknown)}"
    yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) absent")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    prometheus = DEPLOY / "prometheus"
    for argv in (
        ["promtool", "check", "rules", "rules/waypoint.rules.yml"],
        ["promtool", "test", "rules", "tests/waypoint.rules.test.yml"],
        ["promtool", "check", "config", "--syntax-only", "prometheus.yml"],
    ):
        result = subprocess.run(argv, cwd=prometheus, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_one_image_whose_command_chooses_the_process() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["waypoint"]' in dockerfile
    assert "constraints.txt" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, re.M)


async def test_keys_bootstrap_command_of_the_init_job(db: Any, settings: Any) -> None:
    """`waypoint keys bootstrap` (compose init / Kubernetes Job) ensures the admin key once."""
    import asyncio
    import os
    import sys
    import uuid

    from shared.auth.models import ALL_SCOPES
    from shared.auth.service import KeyVerifier, generate_key

    key, tenant = generate_key(), f"t-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "DATABASE_URL": settings.dsn,
        "WAYPOINT_BOOTSTRAP_API_KEY": key,
        "WAYPOINT_DEFAULT_TENANT": tenant,
    }
    outputs = []
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "keys", "bootstrap", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output = (await process.communicate())[0].decode()
        assert process.returncode == 0, output
        outputs.append(output)
    assert "created" in outputs[0]
    assert "already present" in outputs[1]
    assert key not in "".join(outputs)  # the secret itself is never printed
    principal = await KeyVerifier(db.sessionmaker, ttl=0).verify(key)
    assert principal.tenant_id == tenant
    assert principal.scopes == frozenset(ALL_SCOPES)


def test_every_environment_variable_deploy_sets_is_a_real_setting() -> None:
    from services.cli import settings_rows

    known = {env for _scope, env, _default, _description in settings_rows()}
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("waypoint"):
            assert set(service["environment"]) <= known, name
    for doc in _manifests():
        if doc["kind"] in {"ConfigMap", "Secret"}:
            values = doc.get("data") or doc.get("stringData")
            assert set(values) <= known, doc["metadata"]["name"]
