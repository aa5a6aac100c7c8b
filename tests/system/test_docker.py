"""docker/: the compose file, the image and the env file, checked by parsing (no Docker engine).

compose.yaml is interpolated the way ``docker compose config`` does it (``${VAR:-default}``,
``${VAR:?message}``, ``$$`` for a literal ``$``) with the values of ``.env.example`` and dummy
secrets. The commands the containers run are parsed by the real command lines: ``recsys`` in
process; ``airflow`` and ``mlflow server`` in a subprocess each (a few seconds: both import their
whole package), which also checks that every ``AIRFLOW__SECTION__KEY`` and ``MLFLOW_*`` variable
the file sets is a real option.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from recsys import config
from recsys.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"

AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]
OFFICIAL_IMAGES = ["postgres", "redis"]  # may keep the image's own command
SERVICES = [*OFFICIAL_IMAGES, "mlflow", *AIRFLOW_SERVICES, "serving"]
RECSYS_PROCESSES = [*AIRFLOW_SERVICES, "serving"]  # run recsys code: share its settings
RECSYS_ENV = [config.ENV_HOME, config.ENV_EVENT_STORE, config.ENV_LAKE, config.ENV_TRACKING]
RECSYS_ENV += [config.ENV_ARTIFACTS, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
SIMPLE_AUTH_ROLES = {"viewer", "user", "op", "admin"}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$${...}` is a literal.
VAR_REF = re.compile(
    r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)$")
URL_PASSWORD = re.compile(r"://[^/\s:@]*:(?P<password>[^@\s]+)@")


# -- helpers ---------------------------------------------------------------------------------------
def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (the subset compose.yaml uses), then `$$` -> `$`."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if missing else value
        if op in (":?", "?"):
            if missing:
                raise KeyError(f"${{{name}}} is required: {arg}")
            return value
        if op is not None:
            raise ValueError(f"unsupported interpolation {m[0]}")
        return value or ""

    return VAR_REF.sub(sub, text).replace("$$", "$")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def filled_env() -> dict[str, str]:
    """.env.example with every empty (secret) value replaced by a recognisable dummy."""
    return {k: v or f"dummy-{k.lower()}" for k, v in read_env_file(ENV_EXAMPLE).items()}


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML document (compose interpolates values, not keys)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def load(env: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as ``docker compose config`` sees it with ``env`` (merge keys resolved)."""
    return resolve(yaml.safe_load(COMPOSE.read_text()), env)


def references(node: Any) -> list[re.Match[str]]:
    return [m for s in strings(node) for m in VAR_REF.finditer(s)]


def as_list(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script: split on ; && || | and lines, heredoc bodies and
    comments dropped, a leading `exec` removed."""
    commands, heredoc_end = [], None
    for line in script.splitlines():
        if heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
            continue
        if m := re.search(r"<<-?\s*'?(\w+)'?", line):
            heredoc_end, line = m[1], line[: m.start()]
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):
                if current:
                    commands.append(current[1:] if current[0] == "exec" else current)
                current = []
            else:
                current.append(token)
    return commands


def argvs(command: Any) -> list[list[str]]:
    """Every program invocation in a compose `command` or healthcheck `test`."""
    parts = as_list(command)
    if parts and parts[0] in ("CMD", "CMD-SHELL"):
        parts = parts[1:] if parts[0] == "CMD" else ["sh", "-c", parts[1]]
    if len(parts) >= 3 and parts[0] in ("sh", "bash") and parts[1] == "-c":
        return shell_commands(parts[2])
    return [parts]


def invocations(services: dict[str, Any], program: str) -> list[tuple[str, list[str]]]:
    found = []
    for name, svc in services.items():
        for source in (svc.get("command"), svc.get("healthcheck", {}).get("test")):
            if source:
                found += [(name, a[1:]) for a in argvs(source) if a and a[0] == program]
    return found


def run_json(script: str, payload: Any, env: dict[str, str]) -> Any:
    """Run a Python snippet in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") and not pending.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile():
        if word == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))
    return env


def image_path(path: str) -> str:
    """A path inside the image, resolved against the WORKDIR in effect at the end."""
    workdir = "/"
    for word, rest in dockerfile():
        if word == "WORKDIR":
            workdir = str(Path(workdir, rest))
    return str(Path(workdir, path)).rstrip("/")


def copies() -> list[tuple[list[str], str]]:
    out = []
    for word, rest in dockerfile():
        if word in ("COPY", "ADD"):
            args = shlex.split(rest)
            assert not any(a.startswith("--from") for a in args), "single-stage image expected"
            args = [a for a in args if not a.startswith("--")]
            out.append((args[:-1], args[-1]))
    return out


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """compose.yaml as written (merge keys resolved, variables not)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services after interpolation with .env.example (secrets filled with dummies)."""
    return load(filled_env())["services"]


# -- services --------------------------------------------------------------------------------------
def test_expected_services_exist(services: dict[str, Any]) -> None:
    assert set(SERVICES) <= set(services), f"missing: {set(SERVICES) - set(services)}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_has_image_command_healthcheck_env(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    assert svc.get("image") or svc.get("build"), f"{name}: no image or build"
    if name not in OFFICIAL_IMAGES:
        assert svc.get("command"), f"{name}: no command"
    test = svc.get("healthcheck", {}).get("test")
    assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: no healthcheck"
    assert not svc["healthcheck"].get("disable"), f"{name}: healthcheck disabled"
    assert svc.get("environment"), f"{name}: no environment"


def test_project_services_use_the_image_built_from_the_dockerfile(
    services: dict[str, Any],
) -> None:
    built = {name: svc for name, svc in services.items() if name not in OFFICIAL_IMAGES}
    for name, svc in built.items():
        build = svc.get("build")
        assert build, f"{name}: not built from docker/Dockerfile"
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context}, not the repository"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert len({svc["image"] for svc in built.values()}) == 1, "one image for every service"


@pytest.mark.parametrize("name", OFFICIAL_IMAGES)
def test_official_images_pinned_by_tag(services: dict[str, Any], name: str) -> None:
    image = services[name]["image"]
    repo, _, tag = image.partition(":")
    assert repo == name and "build" not in services[name]
    assert re.match(r"\d+\.\d+", tag), f"{name}: pin a version tag, not {image!r}"


# -- secrets, ports, env file ----------------------------------------------------------------------
def test_no_literal_secrets(raw: dict[str, Any]) -> None:
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                m = VAR_REF.fullmatch(value)
                assert m and m["op"] == ":?", f"{name}.{key}: a secret must be ${{VAR:?...}}"
            for url in URL_PASSWORD.finditer(value):
                m = VAR_REF.fullmatch(url["password"])
                assert m and m["op"] == ":?", f"{name}.{key}: literal password in a URL"
    for url in (u for s in strings(raw) for u in URL_PASSWORD.finditer(s)):
        assert VAR_REF.fullmatch(url["password"]), f"literal password in {url[0]!r}"
    # A secret variable is never given a default that would let compose start without it.
    for m in references(raw):
        if SECRET_NAME.search(m["name"]):
            assert m["op"] == ":?", f"${{{m['name']}}} must be required (:?), not {m[0]!r}"


def test_env_example_commits_no_secret() -> None:
    secrets = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if SECRET_NAME.search(k)}
    assert secrets, "the env file names no secret at all"
    assert all(v == "" for v in secrets.values()), f"secrets with values: {secrets}"


def test_env_example_and_compose_name_the_same_variables(raw: dict[str, Any]) -> None:
    in_compose = {m["name"] for m in references(raw)}
    in_example = set(read_env_file(ENV_EXAMPLE))
    assert in_compose - in_example == set(), "used by compose, missing from .env.example"
    assert in_example - in_compose == set(), "in .env.example, unused by compose"


def test_shell_variables_are_escaped(raw: dict[str, Any]) -> None:
    """A bare `$NAME` is compose's to replace (often with nothing): the shell's is `$${NAME}`."""
    for s in strings(raw):
        assert not re.search(r"\$[A-Za-z_]", s.replace("$$", "")), f"unescaped $ in {s!r}"


def test_env_file_is_gitignored() -> None:
    lines = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert {"docker/.env", "/docker/.env"} & lines
    assert not {".env.example", "docker/.env.example", "*.example"} & lines


def published(services: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
                out.append((name, host_ip, str(port.get("published")), str(port["target"])))
            else:
                parts = str(port).split(":")
                assert len(parts) == 3, f"{name}: {port!r} publishes on every interface"
                out.append((name, *parts))
    return out


@pytest.mark.parametrize("source", ["compose defaults", ".env.example"])
def test_published_ports_bind_to_loopback(source: str) -> None:
    env = filled_env()
    if source == "compose defaults":  # docker/.env without the optional variables
        env = {k: v for k, v in env.items() if SECRET_NAME.search(k)}
    ports = published(load(env)["services"])
    assert {name for name, *_ in ports} >= {"airflow-apiserver", "mlflow", "serving"}
    for name, host_ip, _, _ in ports:
        assert host_ip == "127.0.0.1", f"{name} binds to {host_ip or 'every interface'}"


@pytest.mark.parametrize("name", ["airflow-apiserver", "mlflow", "serving"])
def test_healthcheck_probes_the_published_port(services: dict[str, Any], name: str) -> None:
    (target,) = [t for n, _, _, t in published(services) if n == name]
    assert f"localhost:{target}/" in " ".join(services[name]["healthcheck"]["test"])


# -- dependencies ----------------------------------------------------------------------------------
def test_depends_on_known_services_with_conditions(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on without conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            if dep == "airflow-init":
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: {condition}"
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
    for name in RECSYS_PROCESSES:
        assert "postgres" in services[name]["depends_on"], f"{name} starts before postgres"
    for name in AIRFLOW_SERVICES[1:]:
        assert "airflow-init" in services[name]["depends_on"], f"{name} before db migrate"


def test_databases_are_created_by_the_init_script(services: dict[str, Any]) -> None:
    sql = (DOCKER / "postgres-init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+)", sql, flags=re.I))
    mounted = [v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert mounted and (DOCKER / mounted[0].split(":")[0]).resolve().name == "postgres-init.sql"
    used = set()
    for svc in services.values():
        for value in (svc.get("environment") or {}).values():
            if m := re.match(r"[\w+]+://[^@/]*@postgres:5432/(\w+)", str(value)):
                used.add(m[1])
    assert used >= {"airflow", "mlflow", "events"}
    assert used <= created, f"databases no script creates: {used - created}"


# -- Airflow ---------------------------------------------------------------------------------------
def test_airflow_services_share_one_configuration(services: dict[str, Any]) -> None:
    envs = {name: services[name]["environment"] for name in AIRFLOW_SERVICES}
    shared = [
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ]
    for key in shared:
        values = {name: env.get(key) for name, env in envs.items()}
        assert None not in values.values() and len(set(values.values())) == 1, (key, values)
    env = envs["airflow-scheduler"]
    for name, e in envs.items():
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert str(e["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"]).lower() == "false", name
        assert str(e["AIRFLOW__CORE__LOAD_EXAMPLES"]).lower() == "false", name
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    # Without it Airflow derives postgresql+asyncpg, a driver the image does not have.
    sync = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == sync.replace(
        "+psycopg2:", "+psycopg:"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@postgres:5432/airflow")
    (api_port,) = [t for n, _, _, t in published(services) if n == "airflow-apiserver"]
    url = f"http://airflow-apiserver:{api_port}/execution/"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == url


def test_airflow_users_come_from_the_env_and_not_all_admins(
    raw: dict[str, Any], services: dict[str, Any]
) -> None:
    users_raw = raw["services"]["airflow-apiserver"]["environment"][
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
    ]
    assert VAR_REF.search(users_raw), "user names should come from the env file"
    users = services["airflow-apiserver"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    roles = dict(u.split(":")[:2] for u in users.split(","))
    assert set(roles.values()) <= SIMPLE_AUTH_ROLES and "admin" in roles.values()
    assert set(roles.values()) - {"admin"}, "every user is an admin"
    # Their passwords are written to the passwords file from the environment before start.
    env = services["airflow-apiserver"]["environment"]
    script = " ".join(as_list(services["airflow-apiserver"]["command"]))
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    for entry in users_raw.split(","):
        m = VAR_REF.match(entry)
        assert m and m["name"].endswith("_USERNAME"), f"user name not from the env: {entry}"
        password_key = m["name"].replace("_USERNAME", "_PASSWORD")
        assert env.get(m["name"]) == interpolate(m[0], filled_env()), f"{m['name']} not passed"
        assert password_key in env and password_key in script, f"no password for {entry}"


def test_training_pool_has_one_slot(services: dict[str, Any]) -> None:
    pools = [a for _, a in invocations(services, "airflow") if a[:2] == ["pools", "set"]]
    assert [(a[2], a[3]) for a in pools] == [(config.TRAINING_POOL, "1")]
    assert any(a[:2] == ["db", "migrate"] for _, a in invocations(services, "airflow"))


AIRFLOW_CHECK = """
import importlib.util, json, sys
from airflow.cli import cli_parser
from airflow.configuration import conf
payload = json.loads(sys.argv[1])
parser = cli_parser.get_parser()
errors = {}
for argv in payload["argvs"]:
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        errors[" ".join(argv)] = e.code
conf.load_providers_configuration()
described = conf.configuration_description
unknown = [k for k in payload["options"]
           if k[1] not in described.get(k[0], {}).get("options", {})]
missing = [m for m in payload["modules"] if importlib.util.find_spec(m) is None]
print(json.dumps({"errors": errors, "unknown": unknown, "missing": missing}))
"""


@pytest.mark.slow
def test_airflow_commands_and_options_are_real(services: dict[str, Any], tmp_path: Path) -> None:
    argvs_ = [a for _, a in invocations(services, "airflow")]
    assert {a[0] for a in argvs_} >= {"api-server", "scheduler", "dag-processor", "triggerer"}
    assert ["celery", "worker"] in argvs_
    options = set()
    for name in AIRFLOW_SERVICES:
        for key in services[name]["environment"]:
            if key.startswith("AIRFLOW__"):
                section, _, option = key.removeprefix("AIRFLOW__").partition("__")
                options.add((section.lower(), option.lower()))
    options |= {
        tuple(k.removeprefix("AIRFLOW__").lower().split("__", 1))
        for k in dockerfile_env()
        if k.startswith("AIRFLOW__")
    }
    modules = []  # celery --app <module>.app in the worker's healthcheck
    for _, a in invocations(services, "celery"):
        modules.append(a[a.index("--app") + 1].rpartition(".")[0])
    assert modules, "the worker's healthcheck does not ping celery"
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",  # the `celery` commands exist only then
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    }
    payload = {"argvs": argvs_, "options": sorted(options), "modules": modules}
    result = run_json(AIRFLOW_CHECK, payload, env)
    assert result["errors"] == {}, "airflow commands that do not parse"
    assert result["unknown"] == [], "AIRFLOW__ variables that are no Airflow option"
    assert result["missing"] == [], "celery app modules that do not exist"


# -- recsys ----------------------------------------------------------------------------------------
def test_recsys_settings_are_shared(services: dict[str, Any], raw: dict[str, Any]) -> None:
    first = services[RECSYS_PROCESSES[0]]["environment"]
    for name in RECSYS_PROCESSES:
        env = services[name]["environment"]
        for key in RECSYS_ENV:
            if key == config.ENV_EVENT_STORE:  # the same database, each as its own role
                assert sa.make_url(env[key]).set(username="x", password="x") == sa.make_url(
                    first[key]
                ).set(username="x", password="x"), name
                continue
            if (
                name == "serving"
                and key.startswith("MLFLOW_TRACKING_")
                and key != "MLFLOW_TRACKING_URI"
            ):
                continue  # its own read-only user (test_serving_follows_the_registry_...)
            assert env.get(key) == first.get(key) is not None, f"{name}: {key}"
    role = {n: sa.make_url(services[n]["environment"][config.ENV_EVENT_STORE]).username
            for n in RECSYS_PROCESSES}  # fmt: skip
    assert role.pop("airflow-init") == services["postgres"]["environment"]["POSTGRES_USER"]  # owner
    assert role.pop("serving") == "recsys_serving"
    assert set(role.values()) == {"recsys_pipeline"}, role
    settings = config.Settings.from_env({k: str(first[k]) for k in RECSYS_ENV})
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.event_store_url.startswith("postgresql+psycopg://")
    assert settings.event_store_url.endswith("@postgres:5432/events")
    assert settings.artifact_root.startswith("mlflow-artifacts:/"), "artifacts via the server"
    assert settings.lake_root.is_relative_to(settings.home)
    # Written once: an anchor (x-...), not a copy per service.
    anchors = [k for k, v in raw.items() if k.startswith("x-") and isinstance(v, dict)]
    assert any(set(RECSYS_ENV) <= set(raw[k]) for k in anchors), "no x- block with recsys env"


@pytest.mark.parametrize("name", ["airflow-worker", "airflow-scheduler", "airflow-dag-processor"])
def test_lake_and_home_live_on_a_shared_named_volume(
    services: dict[str, Any], raw: dict[str, Any], name: str
) -> None:
    env = services[name]["environment"]
    mounts = dict(v.split(":")[1::-1] for v in services[name]["volumes"])  # target -> source
    for key in (config.ENV_HOME, config.ENV_LAKE):
        (target,) = [t for t in mounts if Path(env[key]).is_relative_to(t)]
        assert mounts[target] in raw["volumes"], f"{name}: {key} not on a named volume"


def test_recsys_commands_are_real_subcommands(services: dict[str, Any]) -> None:
    calls = invocations(services, "recsys")
    assert sorted(name for name, _ in calls) == ["airflow-init", "airflow-init", "serving"]
    parser = build_parser()
    init, reader = [parser.parse_args(a) for n, a in calls if n == "airflow-init"]
    assert (init.command, init.sub, init.roles) == ("store", "init", True)  # the owner migrates
    assert set(init.deny) == {"airflow", "mlflow", "mlflow_auth"}
    assert (reader.command, reader.sub) == ("registry", "reader")  # as the MLflow admin
    serving_env = services["serving"]["environment"]
    assert serving_env["MLFLOW_TRACKING_USERNAME"] == reader.username
    calls = [(n, a) for n, a in calls if n == "serving"]
    for name, argv in calls:
        args = parser.parse_args(argv)  # SystemExit on an unknown command or option
        assert args.command == "serve"
        assert args.host == "0.0.0.0", f"{name}: serve must listen beyond the container"
        (target,) = [t for n, _, _, t in published(services) if n == name]
        assert str(args.port) == target


def test_serving_follows_the_registry_over_http_with_credentials(
    services: dict[str, Any],
) -> None:
    from recsys.cli.models import ENV_READER_PASSWORD

    env = services["serving"]["environment"]
    mlflow_env = services["mlflow"]["environment"]
    init_env = services["airflow-init"]["environment"]
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
    # Serving reads as the reader airflow-init creates; the workers write as the admin.
    assert env["MLFLOW_TRACKING_USERNAME"] != mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == init_env[ENV_READER_PASSWORD]
    assert "ADMIN" not in env["MLFLOW_TRACKING_PASSWORD"]
    assert init_env["MLFLOW_TRACKING_USERNAME"] == mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert init_env["MLFLOW_TRACKING_PASSWORD"] == mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert "mlflow" in services["serving"]["depends_on"]
    assert "mlflow" in services["airflow-init"]["depends_on"]  # creates the reader through it
    worker = services["airflow-worker"]["environment"]
    assert worker["MLFLOW_TRACKING_USERNAME"] == mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]


# -- MLflow ----------------------------------------------------------------------------------------
MLFLOW_CHECK = """
import json, sys
import click
import mlflow.environment_variables as ev
from mlflow.cli import server
payload = json.loads(sys.argv[1])
errors = {}
for argv in payload["argvs"]:
    try:
        server.make_context("server", list(argv), resilient_parsing=False)
    except click.UsageError as e:
        errors[" ".join(argv)] = str(e)
known = {p.envvar for p in server.params if isinstance(p.envvar, str)}
known |= {v.name for v in vars(ev).values() if hasattr(v, "name") and hasattr(v, "get")}
print(json.dumps({"errors": errors, "known": sorted(known)}))
"""


def test_mlflow_server_stores_and_auth(services: dict[str, Any], raw: dict[str, Any]) -> None:
    svc = services["mlflow"]
    env = svc["environment"]
    ((_, argv),) = invocations(services, "mlflow")
    assert argv[0] == "server"
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert "--serve-artifacts" in argv and argv[argv.index("--port") + 1] == "5000"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    destination = env["MLFLOW_ARTIFACTS_DESTINATION"]
    volumes = dict(v.split(":")[1::-1] for v in svc["volumes"])
    assert volumes.get(destination) in raw["volumes"], "artifact root not on a named volume"
    # The auth config is written from the environment before the server starts.
    script = " ".join(as_list(svc["command"]))
    for key in ("MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_CONFIG_PATH"):
        assert key in env and key in script
    # What keeps the serving API's user read-only: it holds no grant, so it gets the default.
    assert "default_permission = READ" in script
    assert env["MLFLOW_AUTH_DATABASE_URI"].startswith("postgresql")
    # basic-auth imports Flask-WTF: mlflow's `auth` extra must be in the image.
    installs = " ".join(rest for word, rest in dockerfile() if word == "RUN")
    prod = re.search(r"^prod = \[(.*?)\n\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S)
    assert "mlflow[auth]" in installs or "mlflow[auth]" in prod[1].lower()


@pytest.mark.slow
def test_mlflow_command_and_variables_are_real(services: dict[str, Any], tmp_path: Path) -> None:
    calls = [a[1:] for _, a in invocations(services, "mlflow")]
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    result = run_json(MLFLOW_CHECK, {"argvs": calls}, env)
    assert result["errors"] == {}, "`mlflow server` options that do not parse"
    used = {
        k for s in services.values() for k in s.get("environment") or {} if k.startswith("MLFLOW")
    }
    own = {"MLFLOW_AUTH_DATABASE_URI"}  # read by the service's own command, not by MLflow
    assert used - own - set(result["known"]) == set(), "MLFLOW_ variables MLflow does not read"


# -- Dockerfile ------------------------------------------------------------------------------------
def test_dockerfile_installs_the_pinned_prod_environment() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = [rest for word, rest in instructions if word == "RUN" and "pip install" in rest]
    project = [r for r in runs if '".[prod]"' in r or "'.[prod]'" in r]
    assert project, "the project is not installed with the prod extra"
    assert all("-c constraints.txt" in r for r in runs), "every pip install uses constraints"
    # torch from the CPU wheel index (2.13.0+cpu satisfies the torch==2.13.0 pin).
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    index = [r for r in runs if "--extra-index-url" in r]
    assert any(" torch" in r for r in index), "torch is not installed from the CPU index"
    assert all("${TORCH_INDEX_URL}" in r for r in index)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "constraints.txt").read_text(), re.M)
    extras = re.search(r"^prod = \[", (ROOT / "pyproject.toml").read_text(), re.M)
    assert extras, "pyproject.toml has no prod extra"


def test_dockerfile_runs_as_non_root() -> None:
    users = [rest.split(":")[0] for word, rest in dockerfile() if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(dockerfile()) if word == "USER")
    assert all(word != "RUN" for word, _ in dockerfile()[last_user:]), "RUN after USER"


def test_dockerfile_copies_existing_paths_and_points_at_them() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    destinations = {}
    for sources, dest in copies():
        for source in sources:
            assert list(ROOT.glob(source)), f"COPY {source}: no such path in the repository"
            assert source.rstrip("/") not in ignored, f"COPY {source} is in .dockerignore"
            destinations[source.rstrip("/")] = image_path(dest)
    assert {"recsys", "dags", "expectations", "pyproject.toml", "constraints.txt"} <= set(
        destinations
    )
    assert {".venv", ".git", ".recsys", "docker/.env"} <= ignored
    env = dockerfile_env()
    assert env["AIRFLOW_HOME"].startswith("/")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == destinations["dags"]
    from recsys.data.suites import ENV_EXPECTATIONS

    assert env[ENV_EXPECTATIONS] == destinations["expectations"]
    assert env[config.ENV_HOME].startswith("/")


# -- docs ------------------------------------------------------------------------------------------
def test_readme_documents_the_store_variables(services: dict[str, Any]) -> None:
    readme = (DOCKER / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml --env-file docker/.env up -d" in readme
    stores = [
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        config.ENV_ARTIFACTS,
        config.ENV_EVENT_STORE,
        config.ENV_LAKE,
    ]
    set_somewhere = {k for s in services.values() for k in s.get("environment") or {}}
    for key in stores:
        assert re.search(rf"`{key}[`=]", readme), f"docker/README.md does not mention {key}"
        assert key in set_somewhere, f"{key} is documented but compose does not set it"
