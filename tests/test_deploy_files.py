"""Static checks of the deployment files: docker-compose.yml, Dockerfile and .dockerignore.

No Docker engine is needed: the compose file is read with PyYAML and the Dockerfile as text.
Only ``test_compose_config_is_valid`` calls the docker client, and it skips (with the reason)
when the client or its compose plugin is missing or when only an engine would be needed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: Variables the api service may receive that are not Settings fields (read by boto3 and co).
FOREIGN_ENV = re.compile(r"AWS_[A-Z0-9_]+")

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` (compose interpolation).
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")

#: Messages of a docker client that needs, and cannot reach, an engine.
NO_ENGINE = re.compile(
    r"cannot connect to the docker daemon|error during connect|is the docker daemon running"
    r"|docker\.sock",
    re.IGNORECASE,
)


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def api(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["api"]


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


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_compose_has_api_and_redis(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose spec has no top-level version key"
    services = compose.get("services") or {}
    assert {"api", "redis"} <= set(services)
    assert services["api"].get("build") is not None, "api is built from the Dockerfile"
    assert str(services["redis"]["image"]).startswith("redis:")


def test_api_environment_names_are_settings_fields(api: dict[str, Any]) -> None:
    env = environment(api)
    assert env, "the api service passes no environment"
    fields = {name.upper() for name in Settings.model_fields}
    unknown = sorted(n for n in env if n.upper() not in fields and not FOREIGN_ENV.fullmatch(n))
    assert not unknown, f"not fields of app.config.Settings: {unknown}"


def test_api_environment_values_validate(api: dict[str, Any]) -> None:
    """The values (defaults of ``${...}`` substituted) are accepted by Settings."""
    fields = set(Settings.model_fields)
    values = {
        name.lower(): interpolate(value)
        for name, value in environment(api).items()
        if value is not None and name.lower() in fields
    }
    settings = Settings(**values)
    assert str(settings.storage_dir).startswith("/data"), "results live on the /data volume"


def test_redis_url_points_at_the_redis_service(api: dict[str, Any]) -> None:
    url = urlparse(interpolate(environment(api)["REDIS_URL"] or ""))
    assert url.scheme in {"redis", "rediss"}
    assert url.hostname == "redis"
    assert url.port in {None, 6379}


def test_api_healthcheck_hits_readyz(api: dict[str, Any]) -> None:
    text = healthcheck_text(api)
    assert "/readyz" in text
    assert ":8000/" in text


def test_api_depends_on_healthy_redis(api: dict[str, Any]) -> None:
    depends_on = api.get("depends_on")
    assert isinstance(depends_on, dict), "depends_on needs the long form to carry a condition"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_api_data_volume(compose: dict[str, Any], api: dict[str, Any]) -> None:
    mounts = [
        str(v).split(":")[:2] if isinstance(v, str) else [v["source"], v["target"]]
        for v in api["volumes"]
    ]
    named = {source for source, target in mounts if target == "/data"}
    assert named, "a volume is mounted at /data"
    assert named <= set(compose.get("volumes") or {}), "the /data volume is a named volume"


def test_redis_is_a_healthchecked_cache(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "redis-cli ping" in healthcheck_text(redis)
    command = redis["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    pairs = dict(zip(args, [*args[1:], None], strict=True))
    assert pairs["--save"] == ""
    assert pairs["--appendonly"] == "no"
    assert pairs["--maxmemory"] == "1gb"
    assert pairs["--maxmemory-policy"] == "allkeys-lru"


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
