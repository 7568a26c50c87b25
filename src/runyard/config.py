"""Settings, resolved once at the edge (the CLI or ``init()``) and passed down.

Precedence, lowest first: the built-in default, ``$RUNYARD_HOME/config.toml``, the project's
``runyard.toml`` (found at the repository root), ``RUNYARD_<KEY>`` environment variables, and
finally explicit overrides (command-line flags). Every resolved value remembers where it came from,
so ``runyard config`` can say why a setting has the value it has.

This is the only module that reads ``os.environ``, and it does so only inside ``resolve()``.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.errors import ConfigError
from runyard.names import is_number

#: Where runyard keeps its database, artifacts and spools. Default ``~/.runyard``.
ENV_HOME = "RUNYARD_HOME"
#: Prefix of every setting's environment variable: ``RUNYARD_DB``, ``RUNYARD_ARTIFACTS`` ...
ENV_PREFIX = "RUNYARD_"

HOME_CONFIG_NAME = "config.toml"
PROJECT_CONFIG_NAME = "runyard.toml"

#: Set by `runyard run` for the process it starts: the SDK attaches to this run instead of making one.
ENV_RUN_ID = "RUNYARD_RUN_ID"
#: Set by the supervisor when it already captures the process's stdout and stderr.
ENV_CAPTURED = "RUNYARD_CAPTURED"
#: Set by tests: the SDK raises its internal errors instead of counting and reporting them.
ENV_STRICT = "RUNYARD_STRICT"

#: Top-level tables of a configuration file that belong to other features, not to settings.
SECTIONS = frozenset({"alerts", "notify", "machines", "environments", "serve"})
#: Where launched runs can execute (``runyard run --on NAME``; see runyard.exec.executors).
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Setting:
    """One configuration key: its name, help text, default and parser."""

    key: str
    help: str
    #: Computes the default from the home directory; ``None`` means "unset".
    default: Callable[[Path], str | None]
    #: Turns a raw string into the stored value; ``base`` resolves relative paths.
    parse: Callable[[str, Path], str]
    #: Whether an empty value means "unset" (only for settings whose default is unset).
    optional: bool = False
    #: A credential: never printed (``runyard config`` shows only that it is set).
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def _parse_path(raw: str, base: Path) -> str:
    return str((base / Path(raw).expanduser()).resolve())


def _parse_db(raw: str, base: Path) -> str:
    if "://" in raw:
        return raw
    # A bare path is a SQLite file: friendlier than spelling out sqlite:////abs/path.
    return "sqlite:///" + _parse_path(raw, base)


def _parse_artifacts(raw: str, base: Path) -> str:
    if raw.startswith("s3://"):
        bucket, _, prefix = raw.removeprefix("s3://").partition("/")
        if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket):
            raise ValueError("expected s3://BUCKET/PREFIX with a bucket name of 3-63 lowercase letters, digits, "
                             "dots and hyphens")
        if any(part in ("", ".", "..") for part in prefix.strip("/").split("/")) and prefix.strip("/"):
            raise ValueError("expected s3://BUCKET/PREFIX without empty, . or .. parts in the prefix")
        return "s3://" + bucket + ("/" + prefix.strip("/") if prefix.strip("/") else "")
    if "://" in raw:
        raise ValueError("expected a directory or s3://BUCKET/PREFIX")
    return _parse_path(raw, base)


def _parse_endpoint(raw: str, base: Path) -> str:
    if not raw.startswith(("http://", "https://")) or len(raw) > 500:
        raise ValueError("expected an http:// or https:// URL of an S3-compatible server")
    return raw.rstrip("/")


def _parse_server(raw: str, base: Path) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _parse_token(raw: str, base: Path) -> str:
    token = raw.strip()
    if not token or any(c.isspace() or ord(c) < 33 for c in token) or len(token) > 200:
        raise ValueError("expected a token as printed by `runyard token create`")
    return token


def _parse_ray(raw: str, base: Path) -> str:
    address = raw.strip()
    if address == "auto":
        return address
    host, sep, port = address.removeprefix("ray://").removeprefix("http://").removeprefix("https://") \
        .rstrip("/").rpartition(":")
    if not sep or not host or not is_number(port):
        raise ValueError("expected http://HEAD:8265 (the dashboard, whose Jobs API runs go through), "
                         "host:port, ray://host:port or auto")
    return address


def _parse_choice(*choices: str) -> Callable[[str, Path], str]:
    def parse(raw: str, base: Path) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw

    return parse


def _parse_seconds(raw: str, base: Path) -> str:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise ValueError("expected between 0 and 86400 seconds")
    return raw


def _parse_count(raw: str, base: Path) -> str:
    if not is_number(raw) or int(raw) < 1000:
        raise ValueError("expected a whole number of at least 1000")
    return raw


def _parse_mib(raw: str, base: Path) -> str:
    if not is_number(raw) or int(raw) < 0:
        raise ValueError("expected a whole number of MiB (0 or more)")
    return raw


def _parse_slots(raw: str, base: Path) -> str:
    if not is_number(raw) or not 1 <= int(raw) <= 1024:
        raise ValueError("expected a whole number from 1 to 1024")
    return raw


def _parse_lease(raw: str, base: Path) -> str:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 1 <= value <= 3600:
        raise ValueError("expected between 1 and 3600 seconds")
    return raw


def _parse_name(raw: str, base: Path) -> str:
    name = raw.strip()
    if not name or len(name) > 100 or any(c in name for c in "/\\\0\n\r\t"):
        raise ValueError("expected a name of 1-100 characters without slashes or control characters")
    return name


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "db",
        "SQLAlchemy URL of the metadata database (sqlite:///... or postgresql+psycopg://...); "
        "a bare path means a SQLite file",
        default=lambda home: "sqlite:///" + str(home / "runyard.db"),
        parse=_parse_db,
    ),
    Setting(
        "artifacts",
        "Where the content-addressed artifact store is: a directory, or s3://BUCKET/PREFIX (credentials "
        "from the usual AWS environment variables or profile)",
        default=lambda home: str(home / "artifacts"),
        parse=_parse_artifacts,
    ),
    Setting(
        "s3_endpoint",
        "URL of the S3-compatible server that holds an s3:// artifact store (MinIO, SeaweedFS, Ceph...); "
        "unset means AWS S3",
        default=lambda home: None,
        parse=_parse_endpoint,
        optional=True,
    ),
    Setting(
        "server",
        "URL of a remote runyard server; unset means work locally",
        default=lambda home: None,
        parse=_parse_server,
        optional=True,
    ),
    Setting(
        "token",
        "API token sent to the server (see `runyard token create`); set it in the environment or the "
        "home's config.toml, never in a project's runyard.toml that others read",
        default=lambda home: None,
        parse=_parse_token,
        optional=True,
        secret=True,
    ),
    Setting(
        "ray",
        "Address of a Ray cluster: its dashboard, http://HEAD:8265, through whose Jobs API runs go to Ray "
        "(runyard run --on ray); unset means no Ray",
        default=lambda home: None,
        parse=_parse_ray,
        optional=True,
    ),
    Setting(
        "node_server",
        "URL of the runyard server as the nodes of a Ray cluster reach it: runs on Ray read their code "
        "from it and ship their records to it; set on the machine whose agent sends runs to Ray",
        default=lambda home: None,
        parse=_parse_server,
        optional=True,
    ),
    Setting(
        "executor",
        "Where `runyard run` sends runs unless --on says otherwise: " + ", ".join(EXECUTORS)
        + " (local: the agent of the machine that queued them, or of the server's machine)",
        default=lambda home: "local",
        parse=_parse_choice(*EXECUTORS),
    ),
    Setting(
        "project",
        "Project that new runs belong to when none is given",
        default=lambda home: "default",
        parse=_parse_name,
    ),
    Setting(
        "slots",
        "How many launched runs may run at once on this machine; default: the number of GPUs, or one per "
        "two CPU cores when there is none",
        default=lambda home: None,
        parse=_parse_slots,
        optional=True,
    ),
    Setting(
        "lease",
        "Seconds an agent's hold on its launched runs (and on the alert outbox) lasts unless renewed; "
        "when it lapses, another agent on the same database marks its runs lost, or queues again those "
        "it never started",
        default=lambda home: "30",
        parse=_parse_lease,
    ),
    Setting(
        "fsync",
        "When the spool is forced to disk: always (within 100 ms), interval (once a second) or never "
        "(the OS decides). A killed process loses nothing either way: a record is in the kernel when "
        "log() returns; a power cut may lose what was not yet forced",
        default=lambda home: "interval",
        parse=_parse_choice("always", "interval", "never"),
    ),
    Setting(
        "system_interval",
        "Seconds between samples of CPU, memory, disk, network and GPU use; 0 turns sampling off",
        default=lambda home: "5",
        parse=_parse_seconds,
    ),
    Setting(
        "finish_timeout",
        "Seconds finish() waits for logged data to reach the store before leaving it to `runyard sync`",
        default=lambda home: "30",
        parse=_parse_seconds,
    ),
    Setting(
        "outputs_interval",
        "Seconds between uploads of a launched run's outputs/ directory while it runs (it is also "
        "uploaded when the run ends)",
        default=lambda home: "120",
        parse=_parse_seconds,
    ),
    Setting(
        "output_limit",
        "MiB: a file a launched run writes outside outputs/ (such as traindata.pt next to the script) is "
        "kept as an output up to this size; a bigger one is not, and the run's log says so",
        default=lambda home: "1024",
        parse=_parse_mib,
    ),
    Setting(
        "big_code_files",
        "How a launched run gets the snapshot's files of 1 MiB or more where the file system cannot "
        "clone them copy-on-write: copy (a writable copy per run) or link (a read-only hard link to the "
        "stored content, using no disk; only for code you trust: a run that changes such a file's mode "
        "can write into it, changing the stored content for every run of that snapshot)",
        default=lambda home: "copy",
        parse=_parse_choice("link", "copy"),
    ),
    Setting(
        "queue_limit",
        "Records held in memory at most while the spool's disk refuses writes (full or failing); more "
        "are counted as lost and the run says so",
        default=lambda home: "100000",
        parse=_parse_count,
    ),
)
SETTINGS_BY_KEY: Mapping[str, Setting] = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Value:
    """A resolved setting and where it came from (``default``, a file, ``env RUNYARD_DB``, ``flag``)."""

    value: str | None
    source: str


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :func:`resolve`; never mutate it."""

    home: Path
    home_source: str
    values: Mapping[str, Value] = field(repr=False)
    #: The project configuration file in effect, if any.
    project_file: Path | None = None
    #: The run to attach to (``RUNYARD_RUN_ID``), set when launched by ``runyard run``.
    run_id: str | None = None
    #: Whether a supervisor already captures stdout and stderr (``RUNYARD_CAPTURED=1``).
    captured: bool = False
    #: Whether the SDK raises its internal errors (``RUNYARD_STRICT=1``, for tests).
    strict: bool = False
    #: Named resource profiles (``[machines.NAME]`` tables): {"gpus": 1, "cpus": 8, "memory": "32G", ...}.
    machines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Named package sets (``[environments.NAME] pip = [...]``): ``runyard run --environment NAME``.
    environments: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self.values["token"].value

    @property
    def db(self) -> str:
        return self._required("db")

    @property
    def artifacts(self) -> str:
        """A directory, or ``s3://bucket/prefix``: open it with ``runyard.store.artifacts.artifacts_of``."""
        return self._required("artifacts")

    @property
    def s3_endpoint(self) -> str | None:
        return self.values["s3_endpoint"].value

    @property
    def server(self) -> str | None:
        return self.values["server"].value

    @property
    def ray(self) -> str | None:
        return self.values["ray"].value

    @property
    def node_server(self) -> str | None:
        return self.values["node_server"].value

    @property
    def executor(self) -> str:
        return self._required("executor")

    @property
    def project(self) -> str:
        return self._required("project")

    @property
    def slots(self) -> int | None:
        value = self.values["slots"].value
        return int(value) if value is not None else None

    @property
    def lease(self) -> float:
        return float(self._required("lease"))

    @property
    def fsync(self) -> str:
        return self._required("fsync")

    @property
    def system_interval(self) -> float:
        return float(self._required("system_interval"))

    @property
    def finish_timeout(self) -> float:
        return float(self._required("finish_timeout"))

    @property
    def outputs_interval(self) -> float:
        return float(self._required("outputs_interval"))

    @property
    def output_limit(self) -> int:
        """Bytes (the setting is in MiB)."""
        return int(self._required("output_limit")) << 20

    @property
    def big_code_files(self) -> str:
        return str(self._required("big_code_files"))

    @property
    def queue_limit(self) -> int:
        return int(self._required("queue_limit"))

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    def source(self, key: str) -> str:
        return self.values[key].source

    def _required(self, key: str) -> str:
        value = self.values[key].value
        assert value is not None, f"setting {key} has no default"
        return value


def find_project_file(cwd: Path) -> Path | None:
    """The ``runyard.toml`` of the project containing ``cwd``.

    Walks up to the nearest directory that holds a ``runyard.toml`` or is a repository root
    (has ``.git``); a ``runyard.toml`` there is the project's file.
    """
    for directory in (cwd, *cwd.parents):
        candidate = directory / PROJECT_CONFIG_NAME
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


MACHINE_KEYS = frozenset({"gpus", "cpus", "memory", "timeout", "priority"})


def _machines(path: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    table = data.get("machines", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: machines must be a table of [machines.NAME] tables")
    out: dict[str, dict[str, Any]] = {}
    for name, profile in table.items():
        if not isinstance(profile, dict):
            raise ConfigError(f"{path}: machines.{name} must be a table, like [machines.{name}] gpus = 1")
        unknown = set(profile) - MACHINE_KEYS
        if unknown:
            raise ConfigError(f"{path}: machines.{name}: unknown key {sorted(unknown)[0]!r}; "
                              f"known keys are: {', '.join(sorted(MACHINE_KEYS))}")
        out[name] = dict(profile)
    return out


def _environments(path: Path, data: dict[str, Any]) -> dict[str, list[str]]:
    table = data.get("environments", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: environments must be a table of [environments.NAME] tables")
    out: dict[str, list[str]] = {}
    for name, profile in table.items():
        example = f'[environments.{name}] pip = ["torch", "torchvision"]'
        if not isinstance(profile, dict):
            raise ConfigError(f"{path}: environments.{name} must be a table, like {example}")
        unknown = set(profile) - {"pip"}
        if unknown:
            raise ConfigError(f"{path}: environments.{name}: unknown key {sorted(unknown)[0]!r}; the one known "
                              f"key is pip, like {example}")
        pip = profile.get("pip", [])
        if not isinstance(pip, list) or not all(isinstance(p, str) and p.strip() for p in pip):
            raise ConfigError(f"{path}: environments.{name}: pip must be a list of requirements, like {example}")
        out[name] = list(pip)
    return out


def _file_values(path: Path, data: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, raw in data.items():
        if key in SECTIONS:
            continue
        if key not in SETTINGS_BY_KEY:
            known = ", ".join(sorted([*SETTINGS_BY_KEY, *SECTIONS]))
            raise ConfigError(f"{path}: unknown key {key!r}; known keys are: {known}")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            raw = str(raw)  # `slots = 2`, `output_limit = 512`: numbers as TOML writes them
        if not isinstance(raw, str):
            raise ConfigError(f"{path}: {key} must be a string or a number, not {type(raw).__name__} ({raw!r})")
        values[key] = raw
    return values


def _parse(setting: Setting, raw: str, base: Path, where: str) -> str | None:
    if raw == "":
        if setting.optional:
            return None
        raise ConfigError(f"{where}: {setting.key} is empty; remove it to use the default")
    try:
        return setting.parse(raw, base)
    except ValueError as e:
        raise ConfigError(f"{where}: invalid {setting.key} {raw!r}: {e}") from None


def _refuse_secrets(path: Path, data: dict[str, Any], home: Path) -> None:
    from runyard.trust import NEVER

    for key in NEVER:
        if key in data:
            raise ConfigError(
                f"{path}: {key} may not be set in a project's runyard.toml: the file travels with the repository, so "
                f"the {key} would be shared, and a repository could hand you one of its own. Set "
                f"{SETTINGS_BY_KEY[key].env} in your shell, or {key} in {home / HOME_CONFIG_NAME}")


def _require_trust(path: Path, resolved: Mapping[str, Value], home: Path) -> None:
    """Refuse a project file's server, db or artifacts (where runs, code and the token go) unless the
    user trusted the file as it is now (``runyard.trust``); values overridden elsewhere do not count."""
    from runyard.trust import GUARDED, is_trusted

    taking_effect = [key for key in GUARDED if resolved[key].source == str(path)]
    if not taking_effect or is_trusted(home, path):
        return
    given = ", ".join(f"{key} = {resolved[key].value!r}" for key in taking_effect)
    envs = ", ".join(SETTINGS_BY_KEY[key].env for key in taking_effect)
    raise ConfigError(
        f"{path} sets {given}: where your runs, code and token go. A project file comes with its repository, "
        f"so it needs your trust for that: if you wrote it or trust its authors, run `runyard trust` in "
        f"{path.parent} (again after any change to it); or set this in {home / HOME_CONFIG_NAME}, with {envs} "
        "or a flag instead")


def _create_private(home: Path) -> None:
    """Create the home readable by its owner only: it holds every run's records, code and outputs,
    and on a shared machine other users must not read them. Made here, before any part of runyard
    creates a directory inside it (an existing home keeps its mode; ``runyard doctor`` warns when
    others can read it)."""
    if home.is_dir():
        return
    # A home that cannot be created is reported by whatever needs it, with its path.
    with contextlib.suppress(OSError):
        os.makedirs(home, mode=0o700, exist_ok=True)  # noqa: PTH103 - mode for the leaf only, on purpose


def home_directory(environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """The home (``RUNYARD_HOME``, else ``~/.runyard``) and where that came from, without reading
    any configuration file."""
    env = os.environ if environ is None else environ
    if env.get(ENV_HOME):
        return Path(env[ENV_HOME]).expanduser().resolve(), f"env {ENV_HOME}"
    return (Path.home() / ".runyard").resolve(), "default"


def resolve(
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the effective settings.

    ``environ`` defaults to ``os.environ`` and ``cwd`` to the working directory; tests pass their own.
    ``overrides`` are values given on the command line, keyed by setting name.
    """
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd

    home, home_source = home_directory(env)

    resolved: dict[str, Value] = {
        s.key: Value(s.default(home), "default") for s in SETTINGS
    }

    home_file = home / HOME_CONFIG_NAME
    project_file = find_project_file(here)
    machines: dict[str, dict[str, Any]] = {}
    environments: dict[str, list[str]] = {}
    for path in (home_file, project_file):
        if path is None or not path.is_file():
            continue
        data = _read_toml(path)
        if path == project_file:
            _refuse_secrets(path, data, home)
        machines.update(_machines(path, data))
        environments.update(_environments(path, data))
        for key, raw in _file_values(path, data).items():
            setting = SETTINGS_BY_KEY[key]
            resolved[key] = Value(_parse(setting, raw, path.parent, str(path)), str(path))

    for setting in SETTINGS:
        if setting.env in env:
            raw = env[setting.env]
            resolved[setting.key] = Value(_parse(setting, raw, here, setting.env), f"env {setting.env}")

    for key, raw in (overrides or {}).items():
        if key not in SETTINGS_BY_KEY:
            raise ConfigError(f"unknown setting {key!r}; known settings are: {', '.join(SETTINGS_BY_KEY)}")
        setting = SETTINGS_BY_KEY[key]
        resolved[key] = Value(_parse(setting, raw, here, f"--{key}"), f"flag --{key}")

    if project_file is not None:
        _require_trust(project_file, resolved, home)
    _create_private(home)
    return Settings(home=home, home_source=home_source, values=resolved, project_file=project_file,
                    run_id=env.get(ENV_RUN_ID) or None, captured=env.get(ENV_CAPTURED) == "1",
                    strict=env.get(ENV_STRICT) == "1", machines=machines,
                    environments=environments)
