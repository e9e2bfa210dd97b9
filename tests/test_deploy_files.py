"""Static checks of the deployment files: docker-compose.yml, the Prometheus and Grafana
configuration, the Dockerfile, the Kubernetes manifests in deploy/k8s and the Grafana dashboard.

No Docker engine or cluster is needed. The compose file is validated against the Compose
Specification's JSON schema (the copy vendored by check-jsonschema), the core Kubernetes
resources against the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate: unknown
fields are errors), the KEDA resources against the fields of KEDA's CRDs, and every PromQL
expression of the dashboard is parsed (promql-parser) and its metrics looked up in what the app
exports. Every environment name is checked against ``app.config.Settings``. Only
``test_compose_config_is_valid`` calls the docker client, and it skips (with the reason) when
the client or its compose plugin is missing or when only an engine would be needed.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jsonschema
import kubernetes_validate
import prometheus_client
import promql_parser
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import app.metrics
from app import __version__
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "audioproc.json"

#: Environment names that are not Settings fields but are meant for the process: the standard
#: AWS credentials and region, read by boto3.
FOREIGN_ENV = re.compile(r"AWS_[A-Z0-9_]+")

#: Names of Settings fields, as environment variables.
SETTINGS_ENV = frozenset(name.upper() for name in Settings.model_fields)

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` (compose interpolation).
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")

#: Messages of a docker client that needs, and cannot reach, an engine.
NO_ENGINE = re.compile(
    r"cannot connect to the docker daemon|error during connect|is the docker daemon running"
    r"|docker\.sock",
    re.IGNORECASE,
)

#: The services issue 6 asks of docker-compose.yml.
COMPOSE_SERVICES = {"api", "worker", "redis", "rabbitmq", "minio", "prometheus", "grafana"}

#: Services that run once and exit (no healthcheck; others wait for their completion).
ONE_SHOT_SERVICES = {"createbuckets"}

#: Ports that third-party images listen on without saying so in docker-compose.yml.
IMAGE_PORTS = {
    ("redis", 6379),
    ("rabbitmq", 5672),
    ("rabbitmq", 15672),
    ("rabbitmq", 15692),  # rabbitmq_prometheus, enabled in the official image
    ("minio", 9000),
    ("prometheus", 9090),
    ("grafana", 3000),
}


def is_known_env(name: str) -> bool:
    return name.upper() in SETTINGS_ENV or FOREIGN_ENV.fullmatch(name) is not None


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """``Settings()`` read from exactly ``env`` (as a container would), whatever this process's
    environment holds."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def duration_s(text: str | int | float) -> float:
    """A compose duration (``90s``, ``1m30s``, ``500ms``) or a number of seconds, in seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def api(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return services["api"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's ``environment``, in either compose form (mapping or ``NAME=value`` list)."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(name): None if value is None else str(value) for name, value in env.items()}
    pairs = (str(item).partition("=") for item in env)
    return {name: (value if sep else None) for name, sep, value in pairs}


def interpolate(value: str) -> str:
    """``value`` with compose's ``${NAME:-default}`` replaced by the default (an empty shell)."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", value)


def resolved_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the container sees it with nothing set in the shell."""
    return {k: interpolate(v) for k, v in environment(service).items() if v is not None}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_compose_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """The file validates against the Compose Specification's schema (unknown keys, wrong
    types and misspelt options are errors)."""
    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert not errors, errors
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert not validator.is_valid(broken), "the schema check would miss a misspelt key"


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose spec has no top-level version key"
    services = compose.get("services") or {}
    assert set(services) >= COMPOSE_SERVICES, sorted(COMPOSE_SERVICES - set(services))
    assert services["api"].get("build") is not None, "api is built from the Dockerfile"
    assert str(services["redis"]["image"]).startswith("redis:")
    assert "management" in str(services["rabbitmq"]["image"]), "the management image (HTTP API)"
    assert str(services["minio"]["image"]).startswith("minio/minio")


def test_worker_runs_the_api_image(services: dict[str, dict[str, Any]]) -> None:
    worker, api = services["worker"], services["api"]
    assert worker["image"] == api["image"]
    command = worker["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert argv == ["audioproc", "worker"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_environment_names_are_settings_fields(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = environment(services[name])
    assert env, f"the {name} service passes no environment"
    unknown = sorted(n for n in env if not is_known_env(n))
    assert not unknown, f"not fields of app.config.Settings: {unknown}"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_environment_values_validate(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings read from the service's environment (defaults of ``${...}`` substituted), as in
    the container: the shared state is Redis, RabbitMQ and S3."""
    settings = settings_from_env(monkeypatch, resolved_env(services[name]))
    assert str(settings.storage_dir).startswith("/data"), "results live on the /data volume"
    assert settings.storage == "s3"
    assert settings.redis_url and settings.amqp_url and settings.s3_bucket
    assert settings.allowed_buckets, "S3 input is allowed from some bucket"


def test_api_and_worker_share_their_configuration(services: dict[str, dict[str, Any]]) -> None:
    api, worker = resolved_env(services["api"]), resolved_env(services["worker"])
    worker_only = {n for n in worker if n.startswith("WORKER_")}
    assert {n: v for n, v in worker.items() if n not in worker_only} == api


def test_urls_point_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    env = resolved_env(services["api"])
    redis = urlparse(env["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)
    amqp = urlparse(env["AMQP_URL"])
    assert (amqp.scheme, amqp.hostname, amqp.port or 5672) == ("amqp", "rabbitmq", 5672)
    rabbitmq = resolved_env(services["rabbitmq"])
    assert unquote(amqp.username or "") == rabbitmq["RABBITMQ_DEFAULT_USER"]
    assert unquote(amqp.password or "") == rabbitmq["RABBITMQ_DEFAULT_PASS"]
    assert amqp.username != "guest", "RabbitMQ's guest user may only connect from localhost"
    s3 = urlparse(env["S3_ENDPOINT_URL"])
    assert (s3.scheme, s3.hostname, s3.port) == ("http", "minio", 9000)
    minio = resolved_env(services["minio"])
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_createbuckets_makes_the_configured_buckets(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = services["createbuckets"]
    assert str(job["image"]).startswith("minio/mc")
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"
    entrypoint = job["entrypoint"]
    script = entrypoint if isinstance(entrypoint, str) else " ".join(map(str, entrypoint))
    made = set(re.findall(r"\blocal/([a-z0-9.-]+)", script.split("mc mb", 1)[1]))
    assert "--ignore-existing" in script, "re-running the stack must not fail"
    settings = settings_from_env(monkeypatch, resolved_env(services["api"]))
    assert settings.s3_bucket in made
    assert settings.allowed_buckets <= made


def test_api_healthcheck_hits_readyz(api: dict[str, Any]) -> None:
    text = healthcheck_text(api)
    assert "/readyz" in text
    assert ":8000/" in text


def test_worker_healthcheck_hits_its_metrics_port(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's HEALTHCHECK probes port 8000, where a worker listens on nothing: the worker
    service overrides it with its metrics port, which must be reachable from other containers."""
    worker = services["worker"]
    settings = settings_from_env(monkeypatch, resolved_env(worker))
    assert settings.worker_metrics_port > 0
    assert settings.worker_metrics_addr == "0.0.0.0"
    assert f":{settings.worker_metrics_port}/metrics" in healthcheck_text(worker)


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} runs once"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form"
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on an unknown service {target}"
            condition = rule["condition"]
            if target in ONE_SHOT_SERVICES:
                assert condition == "service_completed_successfully", (name, target)
            else:
                assert condition == "service_healthy", (name, target)
                assert "healthcheck" in services[target], (name, target)
    needed = {"redis", "rabbitmq", "minio", "createbuckets"}
    for name in ("api", "worker"):
        assert needed <= set(services[name]["depends_on"]), name
    assert "prometheus" in services["grafana"]["depends_on"]


def test_worker_stop_grace_period_exceeds_shutdown_timeout(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = services["worker"]
    settings = settings_from_env(monkeypatch, resolved_env(worker))
    grace = duration_s(worker["stop_grace_period"])
    assert grace >= settings.worker_shutdown_timeout_s + 15, (grace, settings)


def test_api_data_volume(compose: dict[str, Any], api: dict[str, Any]) -> None:
    mounts = [
        str(v).split(":")[:2] if isinstance(v, str) else [v["source"], v["target"]]
        for v in api["volumes"]
    ]
    named = {source for source, target in mounts if target == "/data"}
    assert named, "a volume is mounted at /data"
    assert named <= set(compose.get("volumes") or {}), "the /data volume is a named volume"


def test_redis_evicts_cached_results_before_job_states(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis keeps nothing on disk and, when full, evicts the keys nearest to expiry; every key
    has a TTL, and cached results expire long before job states."""
    redis = compose["services"]["redis"]
    assert "redis-cli ping" in healthcheck_text(redis)
    command = redis["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    pairs = dict(zip(args, [*args[1:], None], strict=True))
    assert pairs["--save"] == ""
    assert pairs["--appendonly"] == "no"
    assert pairs["--maxmemory"] == "1gb"
    assert pairs["--maxmemory-policy"] == "volatile-ttl"
    settings = settings_from_env(monkeypatch, resolved_env(compose["services"]["api"]))
    assert settings.cache_ttl_s < settings.job_ttl_s


def test_compose_config_is_valid() -> None:
    """``docker compose config -q`` accepts the file (skipped without a compose client)."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    missing: list[str] = []
    for candidate in candidates:
        if shutil.which(candidate[0]) is None:
            missing.append(f"`{candidate[0]}` is not on PATH")
            continue
        version = subprocess.run(
            [*candidate, "version"], capture_output=True, text=True, timeout=60, check=False
        )
        if version.returncode == 0:
            command = candidate
            break
        lines = (version.stderr or version.stdout).strip().splitlines()
        missing.append(f"`{' '.join(candidate)}` is unavailable ({lines[0] if lines else '?'})")
    else:
        pytest.skip("no compose client: " + "; ".join(missing))
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0 and NO_ENGINE.search(result.stderr + result.stdout):
        pytest.skip(f"compose config needs a Docker engine here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr


# -- Prometheus and Grafana (docker-compose.yml) ---------------------------------------------


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """``{container path: host path}`` of a service's bind mounts (short syntax, ./relative)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def scrape_targets(config: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """``{job_name: [(host, port), ...]}`` from static and DNS service discovery configs."""
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        targets: list[tuple[str, int]] = []
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, _, port = str(target).rpartition(":")
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs") or []:
            assert dns.get("type", "SRV") == "A", "A records need an explicit port"
            targets.extend((name, int(dns["port"])) for name in dns["names"])
        jobs[job["job_name"]] = targets
    return jobs


def dockerfile_serve_port() -> int:
    argv = exec_form([a for k, a in final_stage(dockerfile_instructions()) if k == "CMD"][-1])
    return int(argv[argv.index("--port") + 1])


def test_prometheus_config_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = bind_mounts(prometheus)
    flags = dict(str(a).partition("=")[::2] for a in prometheus["command"])
    assert mounts[flags["--config.file"]] == PROMETHEUS_FILE.resolve()


def test_prometheus_scrapes_every_api_and_worker_replica(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Targets are compose services on the ports they listen on; DNS discovery (type A) finds
    each replica of a scaled service."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    worker = settings_from_env(monkeypatch, resolved_env(services["worker"]))
    listening = {
        ("api", dockerfile_serve_port()),
        ("worker", worker.worker_metrics_port),
        *IMAGE_PORTS,
    }
    scraped: set[tuple[str, int]] = set()
    for job, targets in scrape_targets(config).items():
        for host, port in targets:
            if host in {"127.0.0.1", "localhost"}:
                continue  # Prometheus itself
            assert host in services, f"{job}: {host} is not a compose service"
            assert (host, port) in listening, f"{job}: nothing listens on {host}:{port}"
            scraped.add((host, port))
    assert ("api", 8000) in scraped
    assert ("worker", worker.worker_metrics_port) in scraped
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        if {host for host, _ in scrape_targets({"scrape_configs": [job]})[job["job_name"]]} & {
            "api",
            "worker",
        }:
            assert job.get("metrics_path", "/metrics") == "/metrics"
            assert job.get("dns_sd_configs"), "replicas are discovered, not pinned"


def test_grafana_provisioning_matches_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    prometheus = next(d for d in datasources if d["type"] == "prometheus")
    url = urlparse(prometheus["url"])
    assert url.hostname in services and (url.hostname, url.port) in IMAGE_PORTS
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "audioproc.yml").read_text(encoding="utf-8")
    )["providers"]
    for provider in providers:
        path = provider["options"]["path"]
        assert mounts.get(path) == DASHBOARD_FILE.parent.resolve(), path


# -- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, comments dropped and continued lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends with a continued line"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; a shell-form one is split like a shell."""
    if arguments.startswith("["):
        value = json.loads(arguments)
        assert isinstance(value, list)
        return [str(item) for item in value]
    return shlex.split(arguments)


@pytest.fixture(scope="module")
def stage() -> list[tuple[str, str]]:
    return final_stage(dockerfile_instructions())


def test_dockerfile_base_image_argument() -> None:
    instructions = dockerfile_instructions()
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    global_args = [args for keyword, args in instructions[:first_from] if keyword == "ARG"]
    assert any(re.fullmatch(r"BASE_IMAGE=\S+", args) for args in global_args), global_args
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "a multi-stage build"
    assert all(args.split()[0] in {"${BASE_IMAGE}", "$BASE_IMAGE"} for args in froms), froms


def test_dockerfile_runs_as_non_root(stage: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0].strip()
    assert user not in {"root", "0", ""}, users[-1]


def test_dockerfile_cmd_serves(stage: list[tuple[str, str]]) -> None:
    cmds = [args for keyword, args in stage if keyword == "CMD"]
    assert cmds, "the final stage has no CMD"
    argv = exec_form(cmds[-1])
    assert argv[:2] == ["audioproc", "serve"], argv
    assert argv[argv.index("--port") + 1] == "8000", argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0", argv


def test_dockerfile_exposes_8000(stage: list[tuple[str, str]]) -> None:
    ports = {p.split("/")[0] for k, args in stage if k == "EXPOSE" for p in args.split()}
    assert "8000" in ports


def test_dockerfile_healthcheck_hits_healthz(stage: list[tuple[str, str]]) -> None:
    checks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert checks, "the final stage has no HEALTHCHECK"
    assert "/healthz" in checks[-1]
    assert ":8000/" in checks[-1]


def test_dockerfile_env_and_volume(stage: list[tuple[str, str]]) -> None:
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert re.search(r"\bSTORAGE_DIR=/data/results\b", env), env
    volumes = " ".join(args for keyword, args in stage if keyword == "VOLUME")
    assert "/data" in volumes


def test_dockerignore_keeps_the_sources() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "var"} <= patterns
    assert not patterns & {"app", "app/", "pyproject.toml", "*", "**"}, patterns


# -- Kubernetes (deploy/k8s) -----------------------------------------------------------------

#: The apiVersion/kind pairs the manifests may use (the cluster needs KEDA for keda.sh).
KNOWN_KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}

#: Kubernetes versions whose OpenAPI schemas the core resources must satisfy: the oldest
#: supported here and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]

#: The fields of KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1, from the
#: CRDs in kedacore/keda config/crd/bases) that these manifests may use; anything else is a
#: typo KEDA would reject or ignore.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "envSourceContainerName": {"type": "string"},
                        },
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "behavior": {"type": "object"},
                                },
                            },
                            "scalingModifiers": {"type": "object"},
                        },
                    },
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                                "metadata": _STRINGS,
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": {"type": "string"},
                                        "kind": {
                                            "enum": [
                                                "TriggerAuthentication",
                                                "ClusterTriggerAuthentication",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    },
                    "env": {"type": "array"},
                    "podIdentity": {"type": "object"},
                },
            }
        },
    },
}

#: Trigger metadata the rabbitmq scaler reads (kedacore/keda pkg/scalers/rabbitmq_scaler.go).
RABBITMQ_TRIGGER_KEYS = {
    "activationValue",
    "excludeUnacknowledged",
    "host",
    "hostFromEnv",
    "mode",
    "operation",
    "pageSize",
    "passwordFromEnv",
    "protocol",
    "queueName",
    "timeout",
    "unsafeSsl",
    "useRegex",
    "usernameFromEnv",
    "value",
    "vhostName",
}

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def load_manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                doc.setdefault("metadata", {})
                docs.append({**doc, "_file": str(path.relative_to(ROOT))})
    return docs


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = load_manifests()
    assert docs, "deploy/k8s holds no manifests"
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def without_file(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_file"}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom sources in order, then env."""
    config_maps, secrets = of_kind(docs, "ConfigMap"), of_kind(docs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secret_data(secrets[source["secretRef"]["name"]]))
    for item in container.get("env") or []:
        assert "value" in item, f"{item['name']}: only literal values are checked"
        env[item["name"]] = str(item["value"])
    return env


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number, or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
    assert port in named, f"no container port named {port!r}"
    return int(named[port])


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``1536Mi``, ``4Gi``) as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    assert match, f"not a quantity: {text!r}"
    scale = {
        None: 1,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    return float(match.group(1)) * scale[match.group(2)]


def dockerfile_uid() -> int:
    users = [a for k, a in final_stage(dockerfile_instructions()) if k == "USER"]
    return int(users[-1].split(":")[0])


def image_parts(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    assert repository and tag, f"{image} has no explicit tag"
    return repository, tag


def test_kustomizations_list_every_manifest() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert K8S / "kustomization.yaml" in kustomizations
    listed: set[Path] = set()
    names: set[str] = set()
    for path in kustomizations:
        kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert kustomization["kind"] == "Kustomization"
        assert "namespace" not in kustomization, "namespace-free: the user picks one"
        for entry in kustomization["resources"]:
            target = (path.parent / entry).resolve()
            assert target.exists(), f"{path}: {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{path}: {entry}"
            else:
                listed.add(target)
        names |= {image["newName"] for image in kustomization.get("images") or []}
        here = {p.resolve() for p in path.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert here <= listed, f"{path}: not listed: {sorted(map(str, here - listed))}"
    assert listed == {p.resolve() for p in manifest_files()}
    assert len(names) == 1, f"the overlays point at different registries: {names}"


def test_manifests_are_known_kinds_and_namespace_free(k8s: list[dict[str, Any]]) -> None:
    seen: set[tuple[str, str]] = set()
    for doc in k8s:
        where = f"{doc['_file']}: {doc['kind']}"
        assert (doc["apiVersion"], doc["kind"]) in KNOWN_KINDS, where
        assert "namespace" not in doc["metadata"], f"{where} names a namespace"
        name = doc["metadata"]["name"]
        assert DNS_LABEL.fullmatch(name) and len(name) <= 63, f"{where}: bad name {name!r}"
        assert (doc["kind"], name) not in seen, f"{where}: {name} defined twice"
        seen.add((doc["kind"], name))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_match_the_kubernetes_schema(
    k8s: list[dict[str, Any]], version: str
) -> None:
    """Strict OpenAPI validation: an unknown or misspelt field is an error, as kubectl's
    server-side field validation would make it."""
    checked = 0
    for doc in k8s:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(without_file(doc), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(map(str, error.path))
            pytest.fail(f"{doc['_file']}: {doc['kind']} {path}: {error.message}")
        checked += 1
    assert checked >= 10
    api = copy.deepcopy(without_file(of_kind(k8s, "Deployment")["audioproc-api"]))
    container = only_container(api)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(api, version, strict=True)


def test_keda_resources_match_the_crd_fields(k8s: list[dict[str, Any]]) -> None:
    for doc in k8s:
        if doc["apiVersion"].startswith("keda.sh/"):
            schema = KEDA_SCHEMAS[doc["kind"]]
            errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
            assert not errors, f"{doc['_file']}: {doc['kind']}: {errors}"
    for scaled in of_kind(k8s, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            unknown = set(trigger["metadata"]) - RABBITMQ_TRIGGER_KEYS
            assert not unknown, f"{scaled['metadata']['name']}: unknown metadata {unknown}"


def test_env_names_are_settings_fields(k8s: list[dict[str, Any]]) -> None:
    """ConfigMap keys, Secret keys loaded with envFrom and env entries: all Settings fields
    (or AWS_*); a misspelt name would be ignored silently by pydantic-settings."""
    unknown: list[str] = []
    from_env: set[str] = set()
    for deployment in of_kind(k8s, "Deployment").values():
        for container in pod_spec(deployment)["containers"]:
            from_env |= {
                s.get("configMapRef", s.get("secretRef", {}))["name"]
                for s in container.get("envFrom") or []
            }
            unknown += [
                f"{deployment['metadata']['name']}: {item['name']}"
                for item in container.get("env") or []
                if not is_known_env(item["name"])
            ]
    for name, config_map in of_kind(k8s, "ConfigMap").items():
        unknown += [f"ConfigMap {name}: {k}" for k in config_map["data"] if not is_known_env(k)]
    for name, secret in of_kind(k8s, "Secret").items():
        if name in from_env:
            unknown += [f"Secret {name}: {k}" for k in secret_data(secret) if not is_known_env(k)]
    assert from_env, "no Deployment loads the ConfigMap or Secret"
    assert not unknown, f"not fields of app.config.Settings: {unknown}"


def test_secrets_hold_placeholders_only(k8s: list[dict[str, Any]]) -> None:
    for name, secret in of_kind(k8s, "Secret").items():
        for key, value in secret_data(secret).items():
            assert "CHANGE-ME" in value, f"Secret {name}: {key} looks like a real credential"


def test_env_values_validate(k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, deployment in of_kind(k8s, "Deployment").items():
        container = only_container(deployment)
        settings = settings_from_env(monkeypatch, container_env(k8s, container))
        assert settings.storage == "s3", name
        assert settings.redis_url and settings.amqp_url, name
        mounts = {m["mountPath"] for m in container.get("volumeMounts") or []}
        assert any(str(settings.storage_dir).startswith(m) for m in mounts), name


def test_api_probes_and_service(k8s: list[dict[str, Any]]) -> None:
    api = of_kind(k8s, "Deployment")["audioproc-api"]
    container = only_container(api)
    port = dockerfile_serve_port()
    argv = container.get("command") or []
    if "--port" in argv:
        assert int(argv[argv.index("--port") + 1]) == port
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness, container["startupProbe"]):
        assert container_port(container, probe["httpGet"]["port"]) == port
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for warm-up"
    assert api["spec"]["replicas"] == 2
    service = of_kind(k8s, "Service")["audioproc-api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for service_port in service["spec"]["ports"]:
        assert container_port(container, service_port["targetPort"]) == port


def test_worker_probes_use_the_metrics_port(
    k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = [d for n, d in of_kind(k8s, "Deployment").items() if "worker" in n]
    assert len(workers) == 2, "a CPU and a GPU worker"
    for worker in workers:
        container = only_container(worker)
        assert container["command"] == ["audioproc", "worker"]
        settings = settings_from_env(monkeypatch, container_env(k8s, container))
        assert settings.worker_metrics_addr == "0.0.0.0", "reachable from outside the pod"
        for probe in ("livenessProbe", "startupProbe"):
            port = container_port(container, container[probe]["httpGet"]["port"])
            assert port == settings.worker_metrics_port, (worker["metadata"]["name"], probe)
        annotations = worker["spec"]["template"]["metadata"].get("annotations") or {}
        assert annotations.get("prometheus.io/port") == str(settings.worker_metrics_port)


def test_images_are_consistent(k8s: list[dict[str, Any]]) -> None:
    """One repository; the CPU tag is the package version and the GPU image adds -cuda."""
    images = {
        name: image_parts(only_container(d)["image"])
        for name, d in of_kind(k8s, "Deployment").items()
    }
    assert {repository for repository, _ in images.values()} == {"audioproc"}
    for name, (_, tag) in images.items():
        expected = f"{__version__}-cuda" if name.endswith("-gpu") else __version__
        assert tag == expected, f"{name}: {tag}"


def test_containers_have_requests_and_limits(k8s: list[dict[str, Any]]) -> None:
    for name, deployment in of_kind(k8s, "Deployment").items():
        for container in pod_spec(deployment)["containers"]:
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, (name, resource)


def test_pipeline_concurrency_fits_the_cpu_limit(
    k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.cpu_count() in a pod is the node's, so PIPELINE_CONCURRENCY is set per Deployment."""
    for name, deployment in of_kind(k8s, "Deployment").items():
        container = only_container(deployment)
        assert "PIPELINE_CONCURRENCY" in {item["name"] for item in container.get("env") or []}
        settings = settings_from_env(monkeypatch, container_env(k8s, container))
        cpu = quantity(container["resources"]["limits"]["cpu"])
        assert settings.pipeline_concurrency * settings.torch_threads <= max(cpu, 1), name


def test_pods_run_as_non_root_on_a_read_only_filesystem(k8s: list[dict[str, Any]]) -> None:
    uid = dockerfile_uid()
    for name, deployment in of_kind(k8s, "Deployment").items():
        spec = pod_spec(deployment)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] == uid, name
        assert spec.get("automountServiceAccountToken") is False, name
        scratch = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            for path in ("/tmp", "/data"):
                assert mounts.get(path) in scratch, f"{name}: {path} is not writable"


def test_hpa_scales_the_api_on_cpu(k8s: list[dict[str, Any]]) -> None:
    (hpa,) = of_kind(k8s, "HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "audioproc-api")
    assert target["name"] in of_kind(k8s, "Deployment")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_keda_scales_workers_on_the_job_queue(
    k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployments = of_kind(k8s, "Deployment")
    authentications = of_kind(k8s, "TriggerAuthentication")
    secrets = of_kind(k8s, "Secret")
    default_queue = Settings.model_fields["amqp_queue"].default
    scaled = of_kind(k8s, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {
        "audioproc-worker",
        "audioproc-worker-gpu",
    }
    for name, scaled_object in scaled.items():
        target = scaled_object["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        deployment = deployments[target["name"]]
        assert "replicas" not in deployment["spec"], "a re-apply would reset KEDA's choice"
        settings = settings_from_env(monkeypatch, container_env(k8s, only_container(deployment)))
        (trigger,) = scaled_object["spec"]["triggers"]
        metadata = trigger["metadata"]
        assert trigger["type"] == "rabbitmq"
        assert metadata["queueName"] == settings.amqp_queue == default_queue, name
        assert metadata["mode"] == "QueueLength"
        assert float(metadata["value"]) > 0
        # Over HTTP the scaler counts ready + unacknowledged messages (jobs in progress).
        assert metadata["protocol"] == "http"
        assert metadata.get("excludeUnacknowledged", "false") == "false"
        auth = authentications[trigger["authenticationRef"]["name"]]
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        host = secret_data(secrets[refs["host"]["name"]])[refs["host"]["key"]]
        url = urlparse(host)
        assert url.scheme in {"http", "https"} and url.port == 15672, host
        assert url.hostname == urlparse(settings.amqp_url or "").hostname, "the same broker"


def test_gpu_worker(k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = of_kind(k8s, "Deployment")["audioproc-worker-gpu"]
    spec = pod_spec(gpu)
    container = only_container(gpu)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert settings_from_env(monkeypatch, container_env(k8s, container)).audio_device == "cuda"
    assert image_parts(container["image"])[1].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["nodeSelector"], "scheduled on GPU nodes only"
    cpu = only_container(of_kind(k8s, "Deployment")["audioproc-worker"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_every_deployment_has_a_disruption_budget(k8s: list[dict[str, Any]]) -> None:
    budgets = list(of_kind(k8s, "PodDisruptionBudget").values())
    for name, deployment in of_kind(k8s, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} budgets"


def test_worker_grace_period_covers_the_graceful_shutdown(
    k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, deployment in of_kind(k8s, "Deployment").items():
        if "worker" not in name:
            continue
        settings = settings_from_env(monkeypatch, container_env(k8s, only_container(deployment)))
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace >= settings.worker_shutdown_timeout_s + 15, (name, grace)


# -- Grafana dashboard -----------------------------------------------------------------------

#: What issue 6 asks the dashboard to show, as the metrics that show it.
DASHBOARD_METRICS = {
    "audioproc_pipeline_step_seconds_bucket",  # latency per step
    "http_requests_total",  # throughput, 5xx
    "http_request_duration_seconds_bucket",  # latency per endpoint
    "audioproc_queue_depth",
    "audioproc_jobs_total",  # jobs by state
    "audioproc_job_duration_seconds_bucket",
    "audioproc_job_retries_total",
    "audioproc_jobs_dead_lettered_total",
    "audioproc_rejected_requests_total",
    "audioproc_cache_lookups_total",  # hit ratio
    "audioproc_cache_errors_total",
    "audioproc_s3_errors_total",
}

#: Suffixes of the samples of each metric type (the text exposition format).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

GRAFANA_VARIABLE = re.compile(r"\$(?:\{__\w+\}|__\w+)")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets") or []
    ]


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression selects (Grafana's $__interval-style variables are
    replaced by a duration first)."""
    tree = promql_parser.parse(GRAFANA_VARIABLE.sub("5m", expr))
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
        return True

    promql_parser.walk(tree, visit)
    return names


def exported_names(text: str) -> set[str]:
    """Every sample name the metrics in ``app.metrics`` and the ``/metrics`` text can have."""
    families = [
        family
        for collector in vars(app.metrics).values()
        if isinstance(collector, prometheus_client.metrics.MetricWrapperBase)
        for family in collector.describe()
    ]
    families += list(text_string_to_metric_families(text))
    names = {family.name + suffix for family in families for suffix in SAMPLE_SUFFIXES[family.type]}
    names |= {sample.name for family in families for sample in family.samples}
    return names


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    assert any(d["type"] == "prometheus" and d.get("isDefault") for d in provisioned)


def test_dashboard_queries_parse(dashboard: dict[str, Any]) -> None:
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    for title, expr in queries:
        try:
            metric_names(expr)
        except ValueError as error:
            pytest.fail(f"{title}: {expr}: {error}")
    with pytest.raises(ValueError):
        metric_names("sum(rate(http_requests_total[$__rate_interval])")


def test_dashboard_metrics_exist(dashboard: dict[str, Any], client: TestClient) -> None:
    """Each metric a panel queries is defined in app/metrics.py or exported on /metrics (the
    instrumentator's http_* series and prometheus_client's defaults)."""
    client.get("/healthz")
    exported = exported_names(client.get("/metrics").text)
    used = {name for _, expr in dashboard_queries(dashboard) for name in metric_names(expr)}
    assert not used - exported, f"no such metric: {sorted(used - exported)}"
    assert DASHBOARD_METRICS <= used, f"not on the dashboard: {sorted(DASHBOARD_METRICS - used)}"
    assert "made_up_seconds_bucket" not in exported


def test_dashboard_shows_latency_per_step(dashboard: dict[str, Any]) -> None:
    per_step = [
        expr
        for _, expr in dashboard_queries(dashboard)
        if "audioproc_pipeline_step_seconds_bucket" in expr and "histogram_quantile" in expr
    ]
    assert per_step
    assert all(re.search(r"by \((le, step|step, le)\)", expr) for expr in per_step), per_step
