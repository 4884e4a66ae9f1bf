"""Check ``docker-compose.yml`` without Docker: services, references, variables, commands.

    .venv/bin/python deploy/validate_compose.py [PATH]   # default: the repository's file

Prints one problem a line and exits 1 when there is any. Variables are interpolated as
``docker compose`` would: from the environment, then ``.env`` beside the file, then the
values ``.env.example`` sets. :func:`validate_compose` checks:

- every required variable (``${VAR:?message}``) is set, as compose refuses to start
  otherwise; when one is missing, that is all it reports;
- the expected services exist; every long-running one has a healthcheck; ``depends_on``
  names existing services, with a valid condition the target can meet, and no cycle;
- every ``${VAR}`` has a default or is documented in ``.env.example``; a variable has one
  default everywhere; a password, key or token has no default (it is required) and is
  never written literally;
- named volumes are declared at top level (and every declared one is used); folders of
  the repository that are bind-mounted exist;
- the commands and healthchecks of the Airflow services, and the scripts they run, call
  real ``airflow`` / ``shelfguard`` / ``celery`` subcommands and options of the installed
  versions (``--help`` in a subprocess with a scratch ``AIRFLOW_HOME``; the Celery app
  must load), the auth manager class imports, and the shelfguard names a script's Python
  imports exist;
- the Airflow services agree on the engine's settings (executor, databases, secrets);
- the Dockerfile exists, its base image is the installed Airflow version, and every file
  it COPYs exists and is not excluded by ``.dockerignore``; scripts run from the image are
  COPYed into it;
- ``SHELFGUARD_*`` names are settings shelfguard reads and their values load; the warehouse
  password reaches dbt; the approvers in ``governance.yml`` are UI users allowed to answer;
- every Airflow service has the same OpenLineage transport, it parses, and an HTTP
  transport points at a service of the file (Marquez).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

EXPECTED_SERVICES = (
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
    "marquez-db",
    "marquez",
    "search",
)
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
# Settings every Airflow container must agree on, or tasks cannot run or decrypt anything.
SHARED_AIRFLOW_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__AUTH_MANAGER",
)
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
# Modules a URL scheme needs; Airflow 3 opens its metadata database with an async engine too.
# A scheme without a driver gets SQLAlchemy 2.1's default, psycopg 3.
DRIVERS = {
    "postgresql": ("psycopg", "asyncpg"),
    "postgresql+psycopg2": ("psycopg2", "asyncpg"),
    "db+postgresql": ("psycopg",),
    "db+postgresql+psycopg2": ("psycopg2",),
    "redis": ("redis", "celery"),
}
SIMPLE_ROLES = ("viewer", "user", "op", "admin")  # in order; "user" and up may answer HITL
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|_AUTH$")
NOT_SECRET_NAME = re.compile(r"_(FILE|PATH|DIR|NAME)$|^SHELFGUARD_K8S_ENV_SECRET$")
SECRET_FLAGS = ("--requirepass", "--password", "--pass")
CLI_PROGRAMS = ("airflow", "shelfguard", "celery")
SHELL_PREFIXES = ("exec", "command", "then", "do", "else", "if", "!", "time")
HELP_TIMEOUT_SECONDS = 180

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_ESCAPED_DOLLAR = "\x00"
_URL_PASSWORD = re.compile(
    r"[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<pw>\$\{[^}]*\}|[^@\s/]+)@", re.IGNORECASE
)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_ENV_LINE = re.compile(r"^\s*(?P<comment>#\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


class MissingVariable(ValueError):
    """A required variable (``${VAR:?message}``) is not set: compose refuses to start."""


@dataclass(frozen=True)
class VarRef:
    """One ``${NAME[op arg]}`` in the compose file."""

    name: str
    op: str | None
    arg: str


@dataclass
class EnvExample:
    """``.env.example``: values it sets, and every name it documents (set or commented)."""

    values: dict[str, str] = field(default_factory=dict)
    documented: set[str] = field(default_factory=set)


@dataclass
class Dockerfile:
    """What the checks need from a Dockerfile."""

    path: Path
    base: str | None = None
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, abs dest)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Compose:
    """The loaded file and what the checks share."""

    path: Path
    project_dir: Path
    data: dict[str, Any]
    env_example: EnvExample
    #: The variables set for compose (environment, ``.env``), over ``.env.example``'s.
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        """What compose interpolates with: ``env`` over the values ``.env.example`` sets."""
        return {**self.env_example.values, **self.env}

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services = self.data.get("services") or {}
        return {str(k): v or {} for k, v in services.items()}

    def airflow_services(self) -> dict[str, dict[str, Any]]:
        """Services built from the repository's Dockerfile that run Airflow (the image's
        own entrypoint); the search service replaces it with ``shelfguard serve``."""
        return {
            name: s for name, s in self.services.items() if "build" in s and "entrypoint" not in s
        }

    def resolve(self, text: str) -> str:
        """``text`` as compose interpolates it with :attr:`values` set."""
        return resolve(text, self.values)

    def environment(self, service: Mapping[str, Any]) -> dict[str, str]:
        """A service's environment, interpolated."""
        return {k: self.resolve(v) for k, v in raw_environment(service).items()}


# --- parsing ---------------------------------------------------------------------------


def var_refs(text: str) -> list[VarRef]:
    """The variables ``text`` interpolates (``$$`` is a literal dollar)."""
    refs = []
    for match in _VAR.finditer(text.replace("$$", _ESCAPED_DOLLAR)):
        name = match.group("braced") or match.group("plain")
        refs.append(VarRef(name, match.group("op"), match.group("arg") or ""))
    return refs


def resolve(text: str, values: Mapping[str, str]) -> str:
    """Interpolate like compose does when only ``values`` are set.

    Raises :class:`MissingVariable` for a required variable that is not set
    (``${VAR:?message}``: unset or empty; ``${VAR?message}``: unset).
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = values.get(name)
        if op in (":-", "-"):
            return (value if value or (op == "-" and value is not None) else arg) or ""
        if op in (":+", "+"):
            return arg if value else ""
        if op in (":?", "?"):
            if value or (op == "?" and value is not None):
                return value or ""
            raise MissingVariable(f"${{{name}}} is required: {arg or 'it is not set'}")
        return value or ""

    escaped = text.replace("$$", _ESCAPED_DOLLAR)
    return _VAR.sub(substitute, escaped).replace(_ESCAPED_DOLLAR, "$")


def read_env_example(path: Path) -> EnvExample:
    """Parse ``.env.example``; ``# NAME=value`` lines document a variable left unset."""
    result = EnvExample()
    if not path.is_file():
        return result
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line)
        if not match:
            continue
        name = match.group("name")
        result.documented.add(name)
        if not match.group("comment"):
            value = match.group("value").strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            result.values[name] = value
    return result


def raw_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=VALUE`` list), uninterpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def strings(node: Any) -> Iterator[str]:
    """Every string value (not key) in a YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def command_tokens(command: Any) -> list[str]:
    """A compose ``command`` / healthcheck ``test`` as argv tokens."""
    if command is None:
        return []
    if isinstance(command, list):
        return [str(token) for token in command]
    return shlex.split(str(command))


def split_heredocs(script: str) -> tuple[str, list[tuple[str, str]]]:
    """The shell text without here-document bodies, and each (command line, body)."""
    lines = script.splitlines()
    shell: list[str] = []
    bodies: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        shell.append(line)
        index += 1
        match = _HEREDOC.search(line)
        if not match:
            continue
        body = []
        while index < len(lines) and lines[index].strip() != match.group(2):
            body.append(lines[index])
            index += 1
        index += 1
        bodies.append((line, "\n".join(body)))
    return "\n".join(shell), bodies


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell text, best effort: split on ``&& || ; |``, newlines
    and command substitutions; parts that do not tokenise (quotes split across) are skipped."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ").replace("$(", "\n").replace("`", "\n")
    for part in re.split(r"&&|\|\||[;|\n)]", text):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:
            continue
        while tokens and (tokens[0] in SHELL_PREFIXES or re.fullmatch(r"\w+=.*", tokens[0])):
            tokens = tokens[1:]
        if tokens:
            yield tokens


def read_dockerfile(path: Path) -> Dockerfile:
    """FROM, COPY (sources and absolute destination) and ENV of a single-stage Dockerfile."""
    result = Dockerfile(path)
    args: dict[str, str] = {}
    workdir = "/"
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            name, _, default = rest.strip().partition("=")
            args[name] = default
        elif instruction == "FROM":
            result.base = resolve(rest.split()[0], args)
        elif instruction == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, rest.strip()))
        elif instruction == "ENV":
            result.env.update(_env_pairs(rest))
        elif instruction in ("COPY", "ADD"):
            copy = _copy_instruction(rest, workdir)
            if copy:
                result.copies.append(copy)
    return result


def _env_pairs(rest: str) -> dict[str, str]:
    tokens = shlex.split(rest)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.partition("=")[::2] for token in tokens)


def _copy_instruction(rest: str, workdir: str) -> tuple[list[str], str] | None:
    tokens = shlex.split(rest)
    if any(token.startswith("--from") for token in tokens):
        return None  # from another stage or image, not from the build context
    tokens = [token for token in tokens if not token.startswith("--")]
    if len(tokens) < 2:
        return None
    *sources, dest = tokens
    absolute = os.path.normpath(os.path.join(workdir, dest))
    if len(sources) > 1 or dest.endswith("/"):
        absolute += "/"
    return sources, absolute


def read_dockerignore(path: Path) -> list[str]:
    """The patterns of a ``.dockerignore`` (``!`` kept as a prefix)."""
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``relative`` (or a folder holding it) is excluded; the last match wins."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        forms = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            excluded = not negate
    return excluded


# --- running the installed tools -------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _scratch_airflow_home() -> str:
    return tempfile.mkdtemp(prefix="validate-compose-airflow-")


def _tool(program: str) -> str | None:
    beside = Path(sys.executable).with_name(program)
    return str(beside) if beside.exists() else shutil.which(program)


@functools.cache
def run_tool(argv: tuple[str, ...], overrides: tuple[tuple[str, str], ...]) -> tuple[int, str]:
    """Run an installed tool in a scratch Airflow home; (exit code, output). Cached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        AIRFLOW_HOME=_scratch_airflow_home(),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
    )
    env.update(dict(overrides))
    try:
        done = subprocess.run(
            list(argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=HELP_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, done.stdout + done.stderr


def _overrides(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    # The executor and the auth manager decide which subcommands `airflow` has.
    keys = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER")
    return tuple((key, env[key]) for key in keys if key in env)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def check_cli(program: str, args: list[str], env: Mapping[str, str], where: str) -> list[str]:
    """``program ARGS``: the subcommand exists (``--help`` exits 0) and takes the options."""
    binary = _tool(program)
    if binary is None:
        return [
            f"{where}: `{program}` is not installed here, cannot check `{program} {' '.join(args)}`"
        ]
    prefix: list[str] = []
    if program == "celery":
        prefix, args = _celery_app(args)
    path = []
    for token in args:
        if token.startswith("-"):
            break
        path.append(token)
    options = [t.split("=", 1)[0] for t in args if t.startswith("-") and t not in ("-", "--")]
    shown = " ".join([program, *prefix, *path])
    code, output = run_tool((binary, *prefix, *path, "--help"), _overrides(env))
    if code != 0:
        return [f"{where}: `{shown}` is not a working command ({_last_line(output)})"]
    return [
        f"{where}: `{shown}` has no option {option}"
        for option in options
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", output)
    ]


def _celery_app(args: list[str]) -> tuple[list[str], list[str]]:
    for index, token in enumerate(args):
        if token in ("-A", "--app") and index + 1 < len(args):
            return [token, args[index + 1]], args[:index] + args[index + 2 :]
        if token.startswith("--app="):
            return [token], args[:index] + args[index + 1 :]
    return [], args


def check_imports(source: str, where: str) -> list[str]:
    """The ``shelfguard`` modules and names a Python snippet imports exist."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"{where}: Python does not parse: {exc.msg} (line {exc.lineno})"]
    wanted: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shelfguard"):
            wanted += [(str(node.module), alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            wanted += [(a.name, None) for a in node.names if a.name.startswith("shelfguard")]
    problems = []
    for module_name, name in wanted:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"{where}: imports {module_name}, which does not import ({exc})")
            continue
        if name and not hasattr(module, name):
            problems.append(f"{where}: imports {name} from {module_name}, which has no {name}")
    return problems


def check_tokens(tokens: list[str], env: Mapping[str, str], where: str) -> list[str]:
    """Check one simple command if it runs one of the tools this project installs."""
    program = Path(tokens[0]).name if tokens else ""
    if program not in CLI_PROGRAMS:
        return []
    return check_cli(program, tokens[1:], env, where)


def check_script(text: str, env: Mapping[str, str], where: str) -> list[str]:
    """Every tool call of a shell script, and the imports of its Python here-documents."""
    shell, bodies = split_heredocs(text)
    problems = []
    for tokens in shell_commands(shell):
        problems += check_tokens(tokens, env, where)
    for line, body in bodies:
        first = shlex.split(line, comments=True)[:1]
        if first and Path(first[0]).name.startswith("python"):
            problems += check_imports(body, f"{where} (Python here-document)")
    return problems


@functools.cache
def check_class(dotted: str, overrides: tuple[tuple[str, str], ...]) -> str | None:
    """None when ``module.Class`` imports, else why not (in a subprocess)."""
    module, _, name = dotted.rpartition(".")
    code = f"import importlib; getattr(importlib.import_module({module!r}), {name!r})"
    exit_code, output = run_tool((sys.executable, "-c", code), overrides)
    return None if exit_code == 0 else _last_line(output)


def known_settings() -> set[str]:
    """``SHELFGUARD_*`` names shelfguard reads: all of config.py, and the ones other
    modules read from the environment (``os.environ[...]`` or a ``*_VAR`` constant)."""
    import shelfguard.config

    config_py = Path(shelfguard.config.__file__)
    found = set(re.findall(r"SHELFGUARD_[A-Z0-9_]*[A-Z0-9]", config_py.read_text("utf-8")))
    for module in config_py.parent.rglob("*.py"):
        text = module.read_text("utf-8")
        found |= set(re.findall(r"environ(?:\.get)?\s*[(\[]\s*[\"'](SHELFGUARD_\w+)", text))
        found |= set(re.findall(r"^[A-Z_]+_VAR\s*=\s*[\"'](SHELFGUARD_\w+)", text, re.M))
    return found


# --- the checks ------------------------------------------------------------------------


def check_services(compose: Compose) -> list[str]:
    """Expected services, healthchecks, depends_on targets and conditions, cycles."""
    services = compose.services
    problems = [f"service {name} is missing" for name in EXPECTED_SERVICES if name not in services]
    one_shot: set[str] = set()
    edges: dict[str, list[str]] = {}
    for name, service in services.items():
        for target, condition in _depends_on(service):
            edges.setdefault(name, []).append(target)
            if condition == "service_completed_successfully":
                one_shot.add(target)
            problems += _check_dependency(services, name, target, condition)
    for name, service in services.items():
        health = service.get("healthcheck") or {}
        if name not in one_shot and (health.get("disable") or not health.get("test")):
            problems.append(f"{name}: long-running service without a healthcheck")
        if name in one_shot and service.get("restart") in ("always", "unless-stopped"):
            problems.append(f"{name}: runs once (service_completed_successfully) but restarts")
    problems += _cycles(edges)
    return problems


def _depends_on(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return [(str(target), "service_started") for target in depends]
    return [
        (str(target), str((spec or {}).get("condition", "service_started")))
        for target, spec in depends.items()
    ]


def _check_dependency(
    services: Mapping[str, Mapping[str, Any]], name: str, target: str, condition: str
) -> list[str]:
    if target not in services:
        return [f"{name}: depends_on {target}, which is not a service"]
    if condition not in CONDITIONS:
        return [f"{name}: depends_on {target} with unknown condition {condition!r}"]
    if condition == "service_healthy" and not (services[target].get("healthcheck") or {}).get(
        "test"
    ):
        return [f"{name}: waits for {target} to be healthy, but {target} has no healthcheck"]
    return []


def _cycles(edges: Mapping[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> str | None:
        if state.get(node) == 1:
            return " -> ".join([*trail[trail.index(node) :], node])
        if state.get(node) == 2:
            return None
        state[node] = 1
        for target in edges.get(node, []):
            cycle = visit(target, [*trail, node])
            if cycle:
                return cycle
        state[node] = 2
        return None

    for node in list(edges):
        cycle = visit(node, [])
        if cycle:
            return [f"depends_on cycle: {cycle}"]
    return []


def check_required(compose: Compose) -> list[str]:
    """Every required variable (``${VAR:?message}``) is set, or compose refuses to start."""
    values = compose.values
    problems = set()
    for text in strings(compose.data):
        for ref in var_refs(text):
            try:
                resolve(f"${{{ref.name}{ref.op or ''}{ref.arg}}}", values)
            except MissingVariable as exc:
                problems.add(str(exc))
    return sorted(problems)


def check_variables(compose: Compose) -> list[str]:
    """Every ${VAR} has a default or is documented; one default each; secrets required."""
    problems = []
    defaults: dict[str, set[str]] = {}
    documented = compose.env_example.documented
    for text in strings(compose.data):
        for ref in var_refs(text):
            if ref.op in (":-", "-"):
                defaults.setdefault(ref.name, set()).add(ref.arg)
            elif ref.name not in documented:
                problems.append(f"${{{ref.name}}} has no default and is not in .env.example")
    for name, values in sorted(defaults.items()):
        if len(values) > 1:
            problems.append(f"${{{name}}} has different defaults: {sorted(values)}")
        if _is_secret(name) and any(values):
            # A default secret is public (it is in this file): compose would start with it.
            problems.append(
                f"${{{name}}} is a secret with a default; require it instead: "
                f"${{{name}:?set {name} in .env (see .env.example)}}"
            )
    return sorted(set(problems))


def _is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


def check_literal_secrets(compose: Compose) -> list[str]:
    """No password, key or token is written in the file itself."""
    problems = []
    for name, service in compose.services.items():
        for key, value in raw_environment(service).items():
            if _is_secret(key) and value and not var_refs(value):
                problems.append(f"{name}: {key} is a literal secret; read it from .env")
        tokens = command_tokens(service.get("command"))
        for flag, value in itertools.pairwise(tokens):
            if flag in SECRET_FLAGS and not var_refs(value):
                problems.append(f"{name}: {flag} takes a literal secret; read it from .env")
        for text in strings(service):
            for match in _URL_PASSWORD.finditer(text.replace("$$", _ESCAPED_DOLLAR)):
                password = match.group("pw")
                if not re.fullmatch(r"\$\{[^}]*\}", password):
                    problems.append(f"{name}: a URL holds a literal password; read it from .env")
    return sorted(set(problems))


def check_volumes(compose: Compose) -> list[str]:
    """Named volumes are declared (and used); bind-mounted repository folders exist."""
    declared = set((compose.data.get("volumes") or {}).keys())
    used: set[str] = set()
    problems = []
    for name, service in compose.services.items():
        for entry in service.get("volumes") or []:
            source = _volume_source(entry, compose.resolve)
            if source is None:
                continue
            if source.startswith(("/", "~")):
                continue
            if source.startswith("."):
                if not (compose.project_dir / source).exists():
                    problems.append(f"{name}: bind-mounts {source}, which does not exist")
                continue
            used.add(source)
            if source not in declared:
                problems.append(f"{name}: volume {source} is not declared under top-level volumes")
    problems += [f"volume {v} is declared but no service mounts it" for v in declared - used]
    return sorted(problems)


def _volume_source(entry: Any, interpolate: Callable[[str], str]) -> str | None:
    """The source of a volume entry (short or long syntax), interpolated; None if anonymous."""
    if isinstance(entry, Mapping):
        source = entry.get("source")
        if not source or entry.get("type", "volume") not in ("volume", "bind"):
            return None
        return interpolate(str(source))
    parts = interpolate(str(entry)).split(":")
    return parts[0] if len(parts) > 1 else None


def check_airflow_env(compose: Compose) -> list[str]:
    """The Airflow services agree on the engine's settings; health endpoints are enabled."""
    services = compose.airflow_services()
    problems = []
    for key in SHARED_AIRFLOW_ENV:
        values = {name: compose.environment(s).get(key) for name, s in services.items()}
        missing = sorted(name for name, value in values.items() if not value)
        if missing:
            problems.append(f"{key} is not set for {', '.join(missing)}")
        elif len(set(values.values())) > 1:
            problems.append(f"{key} differs between the Airflow services")
    for name, service in services.items():
        test = " ".join(command_tokens((service.get("healthcheck") or {}).get("test")))
        env = compose.environment(service)
        if (
            ":8974" in test
            and env.get("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "").lower() != "true"
        ):
            problems.append(f"{name}: polls the scheduler health server, which is not enabled")
    return problems + _check_drivers(compose)


def _check_drivers(compose: Compose) -> list[str]:
    """The drivers the metadata, broker and result URLs need are installed (as in the image,
    which installs pyproject.toml's dependencies and its ``production`` extra)."""
    services = list(compose.airflow_services().values())
    env = compose.environment(services[0]) if services else {}
    problems = []
    for key in SHARED_AIRFLOW_ENV[1:4]:
        scheme = env.get(key, "").split("://", 1)[0]  # postgresql+psycopg2, db+postgresql, redis
        for module in DRIVERS.get(scheme, ()):
            if importlib.util.find_spec(module) is None:
                problems.append(
                    f"{key}: needs the Python module {module}, which is not installed "
                    "(pip install -c constraints.txt -e '.[production]')"
                )
    return problems


def check_commands(compose: Compose, dockerfile: Dockerfile | None) -> list[str]:
    """Commands, healthchecks and scripts of the Airflow services run real commands."""
    problems = []
    for name, service in compose.airflow_services().items():
        env = compose.environment(service)
        tokens = [compose.resolve(t) for t in command_tokens(service.get("command"))]
        problems += _check_command(tokens, env, name, dockerfile, compose.project_dir)
        test = command_tokens((service.get("healthcheck") or {}).get("test"))
        test = [compose.resolve(t) for t in test]
        if test[:1] == ["CMD-SHELL"]:
            problems += check_script(" ".join(test[1:]), env, f"{name} healthcheck")
        elif test[:1] == ["CMD"]:
            problems += check_tokens(test[1:], env, f"{name} healthcheck")
        manager = env.get("AIRFLOW__CORE__AUTH_MANAGER")
        if manager:
            reason = check_class(manager, _overrides(env))
            if reason:
                problems.append(f"{name}: auth manager {manager} does not import ({reason})")
    return sorted(set(problems))


def _check_command(
    tokens: list[str],
    env: Mapping[str, str],
    where: str,
    dockerfile: Dockerfile | None,
    project_dir: Path,
) -> list[str]:
    if not tokens:
        return [f"{where}: no command (the image's default would run)"]
    first = Path(tokens[0]).name
    if first in ("bash", "sh"):
        if tokens[1:2] == ["-c"]:
            return check_script(" ".join(tokens[2:3]), env, where)
        return _check_image_script(tokens[1:2], env, where, dockerfile, project_dir)
    if first.startswith("python"):
        return []
    # The image's entrypoint runs `airflow ARGS` for anything else.
    return check_tokens(tokens if first == "airflow" else ["airflow", *tokens], env, where)


def _check_image_script(
    args: list[str],
    env: Mapping[str, str],
    where: str,
    dockerfile: Dockerfile | None,
    project_dir: Path,
) -> list[str]:
    if not args or dockerfile is None:
        return []
    script = image_to_repo(args[0], dockerfile, project_dir)
    if script is None or not script.is_file():
        return [f"{where}: runs {args[0]}, which no COPY in the Dockerfile puts in the image"]
    return check_script(script.read_text(encoding="utf-8"), env, f"{where} ({script.name})")


def image_to_repo(container_path: str, dockerfile: Dockerfile, context: Path) -> Path | None:
    """The build-context file a path inside the image was COPYed from, if any."""
    for sources, dest in dockerfile.copies:
        for source in sources:
            target = dest + Path(source).name if dest.endswith("/") else dest
            if container_path == target:
                return context / source
            if container_path.startswith(target.rstrip("/") + "/"):
                return context / source / container_path[len(target.rstrip("/")) + 1 :]
    return None


def check_dockerfile(compose: Compose) -> tuple[list[str], Dockerfile | None]:
    """The build's Dockerfile: it exists, is pinned to this Airflow, COPYs what exists."""
    builds = {
        (str(b.get("context", ".")), str(b.get("dockerfile", "Dockerfile")))
        for s in compose.airflow_services().values()
        for b in [s["build"] if isinstance(s["build"], Mapping) else {"context": s["build"]}]
    }
    if len(builds) != 1:
        return [f"the Airflow services build {len(builds)} different images"], None
    context_name, dockerfile_name = builds.pop()
    context = (compose.project_dir / compose.resolve(context_name)).resolve()
    path = context / compose.resolve(dockerfile_name)
    if not path.is_file():
        return [f"build: {path} does not exist"], None
    dockerfile = read_dockerfile(path)
    problems = _check_base_image(dockerfile, compose.project_dir)
    ignored = read_dockerignore(context / ".dockerignore")
    for sources, _ in dockerfile.copies:
        for source in sources:
            if not any(context.glob(source)) and not (context / source).exists():
                problems.append(f"Dockerfile: COPY {source}, which does not exist")
            elif dockerignored(source, ignored):
                problems.append(f"Dockerfile: COPY {source}, which .dockerignore excludes")
    unknown = sorted(set(_shelfguard_names(dockerfile.env)) - known_settings())
    problems += [f"Dockerfile: ENV {n} is not a shelfguard setting" for n in unknown]
    return problems, dockerfile


def _check_base_image(dockerfile: Dockerfile, project_dir: Path) -> list[str]:
    match = re.fullmatch(
        r"apache/airflow:(?:slim-)?(?P<version>\d+\.\d+\.\d+)-python\d+\.\d+",
        dockerfile.base or "",
    )
    if not match:
        return [
            f"Dockerfile: FROM {dockerfile.base} is not a pinned apache/airflow:X.Y.Z-pythonX.Y"
        ]
    try:
        installed = version("apache-airflow")
    except PackageNotFoundError:
        installed = None
    pins = project_dir / "constraints.txt"
    pinned = (
        re.search(r"^apache-airflow==(\S+)$", pins.read_text("utf-8"), re.M)
        if pins.is_file()
        else None
    )
    problems = []
    for where, expected in (
        ("this environment has", installed),
        ("constraints.txt pins", pinned and pinned.group(1)),
    ):
        if expected and match.group("version") != expected:
            problems.append(f"Dockerfile: FROM {dockerfile.base}, but {where} Airflow {expected}")
    return problems


def _shelfguard_names(env: Mapping[str, str]) -> Iterator[str]:
    for key, value in env.items():
        if key.startswith("SHELFGUARD_"):
            yield key
        yield from (ref.name for ref in var_refs(value) if ref.name.startswith("SHELFGUARD_"))


def check_settings(compose: Compose, dockerfile: Dockerfile | None) -> list[str]:
    """SHELFGUARD_* names are known and load; dbt gets the password; the policy fits."""
    from shelfguard.config import SettingsError, load_settings

    known = known_settings()
    problems = []
    for name, service in compose.services.items():
        raw = raw_environment(service)
        for unknown in sorted(set(_shelfguard_names(raw)) - known):
            problems.append(f"{name}: {unknown} is not a setting shelfguard reads")
    for name, service in compose.airflow_services().items():
        env = compose.environment(service)
        try:
            settings = load_settings(env)
        except SettingsError as exc:
            problems.append(f"{name}: {exc}")
            continue
        problems += _check_warehouse_password(name, settings.warehouse_url, env)
    policy_problems, policy = check_policy(compose, dockerfile)
    return sorted(set(problems)) + policy_problems + check_users(compose, policy)


def _check_warehouse_password(name: str, warehouse_url: str, env: Mapping[str, str]) -> list[str]:
    from sqlalchemy.engine import make_url

    from shelfguard.data.dbt_project import PASSWORD_VAR

    if not warehouse_url.startswith("postgres"):
        return []
    password = make_url(warehouse_url).password
    if password and env.get(PASSWORD_VAR) != password:
        return [f"{name}: {PASSWORD_VAR} must be the warehouse password (Cosmos passes none)"]
    return []


def check_policy(compose: Compose, dockerfile: Dockerfile | None) -> tuple[list[str], Any]:
    """The policy the Airflow services load is in the image, fits the approval backend, and
    differs from governance.yml in nothing but ``approval.mode``. Returns it (or None)."""
    from shelfguard.policy import PolicyError, load_policy

    services = compose.airflow_services()
    if not services or dockerfile is None:
        return [], None
    env = {**dockerfile.env, **compose.environment(next(iter(services.values())))}
    project = env.get("SHELFGUARD_PROJECT_DIR", "/opt/shelfguard")
    in_image = env.get("SHELFGUARD_POLICY") or f"{project}/governance.yml"
    path = image_to_repo(in_image, dockerfile, compose.project_dir)
    if path is None or not path.is_file():
        return [
            f"SHELFGUARD_POLICY={in_image}: no COPY in the Dockerfile puts it in the image"
        ], None
    reviewed = compose.project_dir / "governance.yml"
    try:
        policy = load_policy(path)
        base = load_policy(reviewed)
    except (OSError, PolicyError) as exc:
        return [f"policy: {exc}"], None
    problems = []
    if env.get("SHELFGUARD_APPROVAL_BACKEND") == "hitl" and policy.approval.mode == "auto":
        problems.append(f"{path.name}: approval.mode auto, which the hitl backend refuses")
    if policy.approval.mode == "required" and not policy.approval.approvers:
        # With no assigned users, any UI user who may edit the DAG could answer.
        problems.append(f"{path.name}: approval.mode required but no approval.approvers")
    ignore = {"sha256": True, "path": True, "approval": {"mode"}}
    if path.resolve() != reviewed.resolve() and policy.model_dump(
        exclude=ignore
    ) != base.model_dump(exclude=ignore):
        problems.append(f"{path.name}: differs from governance.yml in more than approval.mode")
    return problems, policy


def check_users(compose: Compose, policy: Any) -> list[str]:
    """SimpleAuthManager users: valid roles, a password each, approvers able to answer."""
    envs = [compose.environment(s) for s in compose.airflow_services().values()]
    managers = {env.get("AIRFLOW__CORE__AUTH_MANAGER") for env in envs}
    if managers != {SIMPLE_AUTH_MANAGER}:
        return []
    spec = envs[0].get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    users = dict(item.strip().split(":", 1)[:2] for item in spec.split(",") if ":" in item)
    problems = [
        f"user {u}: role {r!r} is not one of {', '.join(SIMPLE_ROLES)}"
        for u, r in users.items()
        if r.lower() not in SIMPLE_ROLES
    ]
    for user in users:
        variable = "AIRFLOW_PASSWORD_" + user.upper().replace("-", "_")
        if not any(env.get(variable) for env in envs):
            problems.append(f"user {user}: no service gets its password ({variable})")
    for approver in policy.approval.approvers if policy is not None else []:
        if users.get(approver, "").lower() not in SIMPLE_ROLES[1:]:
            problems.append(
                f"approver {approver} (policy) is not a UI user with role user or above"
            )
    return problems


def validate_compose(
    path: Path | str,
    project_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Every problem found in the compose file at ``path`` (empty: none).

    Relative paths (build context, bind mounts) and ``.env.example`` are taken from
    ``project_dir`` (default: the file's folder), as ``docker compose`` does. ``env``
    holds the variables set for compose (its environment and ``.env``); a required
    variable missing from it is reported alone, as compose refuses to start then.
    """
    path = Path(path)
    project = Path(project_dir) if project_dir is not None else path.parent
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: cannot be read as YAML: {exc}"]
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        return [f"{path}: no services"]
    compose = Compose(
        path, project, data, read_env_example(project / ".env.example"), dict(env or {})
    )
    missing = check_required(compose)
    if missing:
        return missing
    problems = check_services(compose)
    problems += check_variables(compose)
    problems += check_literal_secrets(compose)
    problems += check_volumes(compose)
    problems += check_airflow_env(compose)
    docker_problems, dockerfile = check_dockerfile(compose)
    problems += docker_problems
    problems += check_commands(compose, dockerfile)
    problems += check_settings(compose, dockerfile)
    problems += check_openlineage(compose)
    problems += check_search(compose)
    return problems


def check_openlineage(compose: Compose) -> list[str]:
    """Every Airflow service sends lineage through a transport that parses, the same one
    everywhere, and an HTTP transport's host is a service of this file."""
    problems = []
    transports = set()
    for name, service in compose.airflow_services().items():
        raw = compose.environment(service).get("AIRFLOW__OPENLINEAGE__TRANSPORT")
        if not raw:
            problems.append(f"{name}: AIRFLOW__OPENLINEAGE__TRANSPORT is not set")
            continue
        try:
            transport = json.loads(raw)
        except ValueError as error:
            problems.append(f"{name}: AIRFLOW__OPENLINEAGE__TRANSPORT is not JSON ({error})")
            continue
        transports.add(raw)
        if transport.get("type") == "http":
            host = urlsplit(str(transport.get("url", ""))).hostname
            if host not in compose.services:
                problems.append(f"{name}: lineage goes to {host!r}, which is not a service")
    if len(transports) > 1:
        problems.append("AIRFLOW__OPENLINEAGE__TRANSPORT differs between the Airflow services")
    return problems


def check_search(compose: Compose) -> list[str]:
    """The search service runs ``shelfguard serve`` (options it takes), from an image with
    the training package, on the same ledger, artifacts and landing folder as Airflow, with
    a healthcheck on its own /readyz."""
    from shelfguard.config import SettingsError, load_settings

    service = compose.services.get("search")
    if service is None:
        return []
    tokens = [compose.resolve(t) for t in command_tokens(service.get("entrypoint"))]
    if tokens[:2] == ["/usr/bin/dumb-init", "--"]:
        tokens = tokens[2:]
    if tokens[:2] != ["shelfguard", "serve"]:
        return [f"search: runs {' '.join(tokens)!r}, not `shelfguard serve`"]
    env = compose.environment(service)
    problems = check_cli("shelfguard", tokens[1:], env, "search")
    args = ((service.get("build") or {}).get("args")) or {}
    if str(args.get("INSTALL_TRAINING", "")).lower() != "true":
        problems.append("search: its image needs the training package (INSTALL_TRAINING: true)")
    port = tokens[tokens.index("--port") + 1] if "--port" in tokens else "8080"
    test = " ".join(command_tokens((service.get("healthcheck") or {}).get("test")))
    if f"localhost:{port}/readyz" not in test:
        problems.append(f"search: its healthcheck does not ask localhost:{port}/readyz")
    try:
        mine = load_settings(env)
    except SettingsError as exc:
        return [*problems, f"search: {exc}"]
    airflow = next(iter(compose.airflow_services().items()), None)
    if airflow is not None:
        name, service = airflow
        theirs = load_settings(compose.environment(service))
        for setting in ("ledger_url", "artifact_root", "landing_dir"):
            if getattr(mine, setting) != getattr(theirs, setting):
                problems.append(f"search: its {setting} is not {name}'s")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Validate the file named on the command line (default: the repository's)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "docker-compose.yml"
    # As compose reads them: the shell's environment wins over .env beside the file.
    env = {**read_env_example(path.parent / ".env").values, **os.environ}
    problems = validate_compose(path, env=env)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{path}: no problems found")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
