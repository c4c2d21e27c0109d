"""Settings: anyclaude.toml (user settings) and supervisor.toml (the process table).

Both are parsed once into frozen dataclasses. Every value is checked; a bad one raises
ConfigError naming the file, the key and what is allowed. ``ANYCLAUDE_<SECTION>_<KEY>``
environment variables override anyclaude.toml (e.g. ANYCLAUDE_SERVER_PORT=9000).
With no file at all the defaults run the built-in SmolLM2 model, offline, on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from anyclaude.errors import ConfigError
from anyclaude.optimizer_config import OptimizerConfig

DEFAULT_MODEL = "smollm2"    # the built-in model (anyclaude/modelfiles/resolve.py)
DEMO_MODEL = DEFAULT_MODEL   # its former name, kept for imports


def _home(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8082
    api_key: str = ""
    max_body_mb: int = 32
    threads: int = 16             # at least the engines' slots + queues + 4 are started
    write_buffer_kb: int = 1024   # per-client output buffered before a write blocks


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""                # MLX directory, .gguf file, Hugging Face id, builtin:tiny;
                                  # "" = builtin:smollm2, the built-in default model
    kind: str = "mlx"             # mlx | openai | anthropic
    context_window: int = 0       # 0 = the model's own, capped by memory (modelfiles/window.py)
    max_output_tokens: int = 8192
    tool_parser: str = "auto"
    base_url: str = ""            # openai / anthropic kinds
    api_key_env: str = ""         # name of the environment variable holding the key
    display_name: str = ""
    base_urls: tuple = ()         # openai / anthropic: several upstreams of one model (cache affinity)
    concurrency: int = 0          # requests run at once (mlx: batch size); 0 = 4 (engine_slots.py)
    tokenizer: str = ""           # openai: local tokenizer dir for exact counts ("" = path if local)
    extra_params: bool = False    # openai: also send top_k and chat_template_kwargs.enable_thinking
    max_tokens_field: str = "max_tokens"   # openai: max_tokens | max_completion_tokens
    trace_dir: str = ""           # openai / anthropic: one JSON-lines trace per exchange, keys redacted
    timeout_s: float = 600.0      # openai / anthropic: longest silence accepted from the upstream


@dataclass(frozen=True)
class RoutesConfig:
    default: str = DEMO_MODEL
    small: str = ""               # haiku-class side calls
    long_context: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class CacheConfig:
    dir: str = ""                 # "" = <user cache dir>/anyclaude/kv
    disk_budget_mb: int = 8192
    memory_budget_mb: int = 2048
    block_tokens: int = 64        # disk tier granularity (see docs/performance.md)
    write_retry_s: float = 30.0   # after a failed disk write (disk full), memory-only this long


@dataclass(frozen=True)
class SearchConfig:
    searxng_url: str = ""         # "" = web search off (answers `unavailable`)
    timeout_s: float = 8.0
    max_results: int = 8


@dataclass(frozen=True)
class TimeoutsConfig:
    accept_s: float = 2.0          # the engine loop answers Accepted at once, even when busy
    first_frame_s: float = 1800.0
    idle_s: float = 120.0
    total_s: float = 7200.0
    ping_interval_s: float = 10.0
    restart_wait_s: float = 30.0  # a request whose engine died before any output (or that
                                  # was queued while it restarted) waits this long for the
                                  # restarted engine; 0 = never wait


@dataclass(frozen=True)
class EngineConfig:
    prefill_step_size: int = 256
    queue_size: int = 8
    force_file: str = ""          # test hook: rules that make the model say an exact text


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "warning"        # console level; files always get info and above
    dir: str = ""                 # "" = <user state dir>/anyclaude/logs


@dataclass(frozen=True)
class Settings:
    server: ServerConfig = ServerConfig()
    models: dict = field(default_factory=lambda: {DEMO_MODEL: ModelConfig()})
    routes: RoutesConfig = RoutesConfig()
    cache: CacheConfig = CacheConfig()
    search: SearchConfig = SearchConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    engine: EngineConfig = EngineConfig()
    logging: LoggingConfig = LoggingConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    source: str = "(defaults)"

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir) if self.cache.dir else _home("XDG_CACHE_HOME", ".cache") / "anyclaude"

    @property
    def log_dir(self) -> Path:
        if self.logging.dir:
            return Path(self.logging.dir)
        return _home("XDG_STATE_HOME", ".local/state") / "anyclaude" / "logs"

    @property
    def kv_dir(self) -> Path:
        return self.cache_dir / "kv"

    def model(self, model_id: str) -> ModelConfig:
        return self.models[model_id]


_SECTIONS = {f.name: f.type for f in dataclasses.fields(Settings)
             if f.name not in ("models", "source")}
_ALLOWED = {
    ("models", "kind"): ("mlx", "openai", "anthropic"),
    ("models", "tool_parser"): ("auto", "hermes", "qwen3_coder", "mistral", "llama3", "pythonic",
                                "glm47", "kimi_k2", "kimi_k3", "minimax_m2", "gemma4",
                                "function_gemma", "longcat", "minicpm5", "muse_spark", "deepseek",
                                "json_tools", "laguna", "none"),
    ("logging", "level"): ("debug", "info", "warning", "error"),
    ("models", "max_tokens_field"): ("max_tokens", "max_completion_tokens"),
}


def config_path() -> Path | None:
    """ANYCLAUDE_CONFIG, else ./anyclaude.toml, else ~/.config/anyclaude/anyclaude.toml."""
    explicit = os.environ.get("ANYCLAUDE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"ANYCLAUDE_CONFIG points to {path}, which is not a file")
        return path
    for path in (Path("anyclaude.toml"), _home("XDG_CONFIG_HOME", ".config") / "anyclaude" / "anyclaude.toml"):
        if path.is_file():
            return path
    return None


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_settings(path: Path | None = None, env: dict | None = None) -> Settings:
    env = os.environ if env is None else env
    path = path or config_path()
    raw = read_toml(path) if path else {}
    where = str(path) if path else "(defaults)"
    unknown = set(raw) - set(_SECTIONS) - {"models"}
    if unknown:
        raise ConfigError(f"{where}: unknown section [{sorted(unknown)[0]}]; "
                          f"allowed: {', '.join(sorted([*_SECTIONS, 'models']))}")
    values = {}
    for name, cls in _SECTIONS.items():
        cls = _resolve(cls)
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        table = {**table, **_env_overrides(name, cls, env)}
        values[name] = build(cls, table, where, name)
    values["models"] = _models(raw.get("models"), where, env)
    settings = Settings(**values, source=where)
    _check_routes(settings, where)
    return settings


def _models(table, where: str, env) -> dict:
    if table is None:   # the built-in model (path "" = builtin:smollm2)
        table = {DEFAULT_MODEL: {} if "ANYCLAUDE_MODEL_PATH" in env
                 else {"display_name": "SmolLM2-135M-Instruct"}}
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where}: [models] must hold at least one [models.<id>] table")
    models = {}
    for model_id, body in table.items():
        if model_id.startswith("claude-"):
            raise ConfigError(f"{where}: models.{model_id}: local model ids must not start with "
                              "'claude-' (Claude Code would assume a 200K context); rename it")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: models.{model_id} must be a table")
        models[model_id] = build(ModelConfig, body, where, f"models.{model_id}")
    if "ANYCLAUDE_MODEL_PATH" in env:  # shortcut: run another model without a file
        first = next(iter(models))
        models[first] = dataclasses.replace(models[first], path=env["ANYCLAUDE_MODEL_PATH"])
    return models


def _check_routes(settings: Settings, where: str) -> None:
    for route in dataclasses.fields(RoutesConfig):
        target = getattr(settings.routes, route.name)
        if target and target not in settings.models:
            if route.name == "default" and target == DEMO_MODEL:
                # no default named: use the first configured model
                first = next(iter(settings.models))
                object.__setattr__(settings, "routes", dataclasses.replace(settings.routes, default=first))
                continue
            raise ConfigError(f"{where}: routes.{route.name} = {target!r} is not a configured model; "
                              f"configured: {', '.join(settings.models)}")


def _resolve(annotation):
    if isinstance(annotation, str):
        return eval(annotation, vars(sys.modules[__name__]))
    return annotation


def build(cls, table: dict, where: str, prefix: str):
    """A frozen dataclass from a TOML table, naming the bad key on any error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}: unknown key {prefix}.{key}; allowed: {', '.join(fields)}")
    kwargs = {}
    section = prefix.split(".")[0]
    for key, value in table.items():
        expected = _resolve(fields[key].type)
        kwargs[key] = _coerce(value, expected, f"{where}: {prefix}.{key}")
        allowed = _ALLOWED.get((section, key))
        if allowed and kwargs[key] not in allowed:
            raise ConfigError(f"{where}: {prefix}.{key} = {value!r}; allowed: {', '.join(allowed)}")
        if isinstance(kwargs[key], (int, float)) and not isinstance(kwargs[key], bool) and kwargs[key] < 0:
            raise ConfigError(f"{where}: {prefix}.{key} = {value!r}; must not be negative")
    return cls(**kwargs)


def _coerce(value, expected, what: str):
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    else:
        return value
    wanted = "a list of strings" if expected is tuple else expected.__name__
    raise ConfigError(f"{what} = {value!r}: expected {wanted}")


def _env_overrides(section: str, cls, env) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        name = f"ANYCLAUDE_{section.upper()}_{f.name.upper()}"
        if name in env:
            out[f.name] = env[name]
    return out


# --- supervisor.toml --------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple
    depends_on: tuple = ()
    ready_timeout: float = 60.0
    graceful_timeout: float = 5.0
    heartbeat_timeout: float = 5.0
    each_model: bool = False      # one instance per configured model, named NAME-<model id>
    model_kinds: tuple = ()       # with each_model: only models of these kinds


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 60.0    # a run this long resets the backoff
    max_failures: int = 5         # this many failures within `window` seconds -> fatal
    window: float = 120.0


@dataclass(frozen=True)
class ProcessTable:
    services: tuple               # ServiceSpec, in file order
    restart: RestartPolicy = RestartPolicy()
    source: str = ""


def supervisor_toml_path() -> Path:
    explicit = os.environ.get("ANYCLAUDE_SUPERVISOR_TOML")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parent.parent / "supervisor.toml"


def load_process_table(path: Path | None = None) -> ProcessTable:
    path = path or supervisor_toml_path()
    if not path.is_file():
        raise ConfigError(f"process table {path} not found; set ANYCLAUDE_SUPERVISOR_TOML")
    raw = read_toml(path)
    where = str(path)
    unknown = set(raw) - {"services", "restart"}
    if unknown:
        raise ConfigError(f"{where}: unknown section [{sorted(unknown)[0]}]; allowed: services, restart")
    restart = build(RestartPolicy, raw.get("restart", {}), where, "restart")
    services = []
    for name, body in (raw.get("services") or {}).items():
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: services.{name} must be a table")
        body = dict(body)
        command = body.pop("command", None)
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise ConfigError(f"{where}: services.{name}.command must be a non-empty list of strings")
        depends = body.pop("depends_on", [])
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise ConfigError(f"{where}: services.{name}.depends_on must be a list of service names")
        kinds = body.pop("model_kinds", [])
        body.update(name=name, command=tuple(command), depends_on=tuple(depends), model_kinds=tuple(kinds))
        services.append(build(ServiceSpec, body, where, f"services.{name}"))
    names = {s.name for s in services}
    for spec in services:
        for dep in spec.depends_on:
            if dep not in names:
                raise ConfigError(f"{where}: services.{spec.name}.depends_on names unknown service {dep!r}")
    return ProcessTable(tuple(services), restart, where)
