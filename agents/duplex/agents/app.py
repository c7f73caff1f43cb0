"""What every `agent` command shares: finding the developer's app, picking a backend.

An *app* is a Python file or module that says how to build a session for one call.
`load_app` accepts ``path/to/app.py``, ``package.module``, either optionally
followed by ``:name`` to pick one attribute. It looks, in this order, for:

1. ``async def entrypoint(ctx: AppContext)`` - full control: build the agent,
   then ``await ctx.start(agent, **session_options)`` (once per call);
2. ``def create_session(backend) -> AgentSession`` (sync or async; the
   ``backend`` parameter is optional) - the runtime starts it on the call;
3. exactly one `Agent` subclass defined in that module - run with the chosen
   backend and default session options.

Backends and plugins are found through entry points (``duplex.backends``,
``duplex.commands``), so this module never names one; a missing optional
dependency becomes a `MissingExtraError` that says which extra to install.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from importlib.metadata import packages_distributions as _packages_distributions
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from .agent import Agent
from .backend import Backend
from .errors import ConfigurationError
from .session import AgentSession
from .transport import Transport
from .vad import TurnOptions

__all__ = [
    "BACKEND_GROUP",
    "COMMAND_GROUP",
    "DIST_NAME",
    "TESTING_BACKEND_GROUP",
    "AppContext",
    "AppKind",
    "AppLoadError",
    "AppSpec",
    "MissingExtraError",
    "PortInUseError",
    "Prepare",
    "choose_backend",
    "default_backend_name",
    "default_turn",
    "default_vad",
    "extra_for_module",
    "load_app",
    "load_entry_point",
    "missing_extra_error",
    "translate_bind_errors",
]

log = logging.getLogger(__name__)

DIST_NAME = "duplex-agents"
BACKEND_GROUP = "duplex.backends"
#: Backends for tests (the scripted one): selectable by name, never offered in listings.
TESTING_BACKEND_GROUP = "duplex.backends.testing"
COMMAND_GROUP = "duplex.commands"
#: VAD factories; every command gives a session that names no VAD the ``webrtc`` one.
VAD_GROUP = "duplex.vads"
DEFAULT_VAD = "webrtc"
#: Factories of default `TurnOptions` (an end-of-turn model); None from one means "absent".
TURN_GROUP = "duplex.turn_models"
DEFAULT_TURN = "smart_turn"

AppKind = Literal["entrypoint", "create_session", "agent"]
#: A hook run on each call's session and transport before the session starts.
Prepare = Callable[[AgentSession, Transport], None]


class AppLoadError(ConfigurationError):
    """The app path does not lead to something runnable; the message says what to fix."""


class MissingExtraError(ConfigurationError, ImportError):
    """An optional dependency is not installed; ``extra`` names the pip extra that brings it."""

    def __init__(self, message: str, *, extra: str | None = None, module: str | None = None):
        super().__init__(message)
        self.extra = extra
        self.module = module


class PortInUseError(ConfigurationError):
    """A server could not bind its port because something else holds it."""


# --- running an app on one call -----------------------------------------------------------
@dataclass
class AppContext:
    """What an ``entrypoint(ctx)`` gets: the call, the backend, and a way to start a session."""

    transport: Transport
    backend: Backend
    #: Session options the command was given (e.g. a VAD); ``start`` merges them in.
    session_options: Mapping[str, Any] = field(default_factory=dict)
    session: AgentSession | None = None
    #: Called with the session and transport just before the session starts (recorders).
    prepare: Prepare | None = None

    async def start(self, agent: Agent, **options: Any) -> AgentSession:
        """Create the session for this call with ``agent`` and start it on the transport."""
        if self.session is not None:
            raise ConfigurationError("ctx.start() may be called once per call")
        session = AgentSession(
            agent=agent, backend=self.backend, **{**self.session_options, **options}
        )
        self.session = session
        await _start(session, self.transport, self.prepare)
        return session


@dataclass(frozen=True)
class AppSpec:
    """A loaded app: how to make the session for one call. Commands call `start` per call."""

    #: Where it came from, e.g. ``examples/assistant.py:Assistant``, for messages.
    name: str
    kind: AppKind
    target: Callable[..., Any]
    module: ModuleType

    def command_defaults(
        self,
        backend: Backend,
        session_options: Mapping[str, Any],
        vad: Callable[[], Any] | None = None,
    ) -> dict[str, Any]:
        """``session_options`` plus the commands' turn-taking defaults.

        A session the command builds (not ``create_session``'s own) that names no VAD
        gets ``vad()`` (`default_vad` unless given) and, unless it names turn options,
        `default_turn` for ``backend``.
        """
        options = dict(session_options)
        if "vad" not in options and self.kind != "create_session":
            options["vad"] = (vad or default_vad)()
            if "turn" not in options:
                turn = default_turn(backend)
                if turn is not None:
                    options["turn"] = turn
        return options

    async def start(
        self,
        transport: Transport,
        backend: Backend,
        *,
        prepare: Prepare | None = None,
        **session_options: Any,
    ) -> AgentSession:
        """Build this app's session for one call and start it on ``transport``.

        A session the command builds gets `command_defaults` (the default VAD and
        end of turn), so every command turns the same way.
        """
        session_options = self.command_defaults(backend, session_options)
        if self.kind == "entrypoint":
            ctx = AppContext(transport, backend, session_options, prepare=prepare)
            await self.target(ctx)
            if ctx.session is None:
                raise AppLoadError(
                    f"{self.name} returned without starting a session; "
                    "call `await ctx.start(MyAgent())` in it"
                )
            return ctx.session
        if self.kind == "create_session":
            wants_backend = bool(inspect.signature(self.target).parameters)
            made = self.target(backend) if wants_backend else self.target()
            if inspect.isawaitable(made):
                made = await made
            if not isinstance(made, AgentSession):
                raise AppLoadError(
                    f"{self.name} returned {type(made).__name__}, expected an AgentSession"
                )
            await _start(made, transport, prepare)
            return made
        session = AgentSession(agent=self.target(), backend=backend, **session_options)
        await _start(session, transport, prepare)
        return session


async def _start(
    session: AgentSession, transport: Transport, prepare: Prepare | None = None
) -> None:
    """Start, or close what was half started: a failed start leaves no task behind.

    A transport that names its call (``session_id``, as the playground's does) gives the
    session that id, so the page, the logs and recordings all say the same.
    """
    call_id = getattr(transport, "session_id", None)
    if isinstance(call_id, str) and call_id:
        session.id = call_id
    if prepare is not None:
        prepare(session, transport)
    try:
        await session.start(transport)
    except BaseException:
        await session.aclose("start failed")
        raise


def load_app(path_or_module: str) -> AppSpec:
    """Import ``path.py[:name]`` or ``package.module[:name]`` and find what to run."""
    target, attr = _split_attr(path_or_module)
    module = _import_app(target)
    if attr is not None:
        if not hasattr(module, attr):
            raise AppLoadError(f"{target} has no attribute {attr!r}")
        return _classify(f"{target}:{attr}", getattr(module, attr), module)
    for special in ("entrypoint", "create_session"):
        fn = getattr(module, special, None)
        if callable(fn):
            return _classify(f"{target}:{special}", fn, module)
    agents = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Agent)
        and obj is not Agent
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]
    if not agents:
        raise AppLoadError(
            f"{target} defines no Agent subclass, entrypoint(ctx) or create_session(); "
            "add `class MyAgent(Agent): ...`"
        )
    if len(agents) > 1:
        names = ", ".join(sorted(a.__name__ for a in agents))
        first = agents[0].__name__
        raise AppLoadError(
            f"{target} defines several agents ({names}); pick one with {target}:{first}"
        )
    return _classify(f"{target}:{agents[0].__name__}", agents[0], module)


def _split_attr(spec: str) -> tuple[str, str | None]:
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.isidentifier():
        return head, tail
    return spec, None


def _classify(name: str, obj: object, module: ModuleType) -> AppSpec:
    if inspect.isclass(obj):
        if not issubclass(obj, Agent):
            raise AppLoadError(f"{name} is a class but not an Agent subclass")
        _check_constructs(name, obj)
        return AppSpec(name, "agent", obj, module)
    if not callable(obj):
        raise AppLoadError(f"{name} is a {type(obj).__name__}, not an agent or a function")
    # A coroutine function takes the call's context; any other function builds a session.
    if getattr(obj, "__name__", "") == "create_session" or not inspect.iscoroutinefunction(obj):
        return AppSpec(name, "create_session", obj, module)
    return AppSpec(name, "entrypoint", obj, module)


def _check_constructs(name: str, cls: type[Agent]) -> None:
    """Build the agent once at start-up: a constructor that needs arguments (or raises) is
    reported now, not when the first caller is already on the line. Each call gets its own."""
    try:
        cls()
    except Exception as e:
        raise AppLoadError(
            f"{name}() failed: {type(e).__name__}: {e}. An app's Agent is built once per call "
            "with no arguments; give its parameters defaults, or write "
            "`async def entrypoint(ctx)` that builds it"
        ) from e


def _looks_like_path(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target


def _import_app(target: str) -> ModuleType:
    if _looks_like_path(target):
        path = Path(target)
        if not path.is_file():
            raise AppLoadError(f"no such file: {target}")
        return _import_file(path.resolve(), target)
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", target):
        raise AppLoadError(f"{target!r} is neither a .py file nor a module name")
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is not None and (target == e.name or target.startswith(e.name + ".")):
            raise AppLoadError(
                f"no module named {target!r} (pass a file path like app.py, or check sys.path)"
            ) from None
        raise missing_extra_error(e, context=f"importing {target}") from e
    except Exception as e:
        raise AppLoadError(f"importing {target} failed: {type(e).__name__}: {e}") from e


def _import_file(path: Path, shown: str) -> ModuleType:
    name = "_duplex_app_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {shown}")
    module = importlib.util.module_from_spec(spec)
    # Let the app import its sibling modules, as `python app.py` would.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        del sys.modules[name]
        raise missing_extra_error(e, context=f"importing {shown}") from e
    except Exception as e:
        del sys.modules[name]
        raise AppLoadError(f"importing {shown} failed: {type(e).__name__}: {e}") from e
    return module


# --- extras and entry points ---------------------------------------------------------------
_REQ_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;.*extra\s*==\s*['\"]([^'\"]+)['\"]")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_for_module(module: str | None, *, hint: str | None = None) -> str | None:
    """The smallest extra of duplex-agents that installs ``module`` (a top-level import name).

    ``hint`` (e.g. the plugin name of the entry point that failed) is used when the
    module is not mapped to any distribution, e.g. a plugin module that is absent.
    """
    try:
        requires = distribution(DIST_NAME).requires or []
        extras = set(distribution(DIST_NAME).metadata.get_all("Provides-Extra") or [])
    except PackageNotFoundError:
        return None
    by_extra: dict[str, set[str]] = {}
    for line in requires:
        m = _REQ_RE.match(line)
        if m:
            by_extra.setdefault(m.group(2), set()).add(_canonical(m.group(1)))
    top = (module or "").split(".")[0]
    wanted = {_canonical(top)} | {_canonical(d) for d in _packages_distributions().get(top, [])}
    candidates = [
        (len(reqs), extra)
        for extra, reqs in by_extra.items()
        if extra not in ("all", "dev", "docs") and reqs & wanted
    ]
    if candidates:
        return min(candidates)[1]
    if hint is not None and hint in extras:
        return hint
    return None


def _plugin_name(module_path: str) -> str | None:
    parts = module_path.split(".")
    if len(parts) >= 3 and parts[0] == "duplex" and parts[1] in ("plugins", "backends"):
        return parts[2]
    return None


def missing_extra_error(
    exc: ModuleNotFoundError, *, context: str, owner: str | None = None
) -> MissingExtraError:
    """Turn a failed import into advice: which extra to install, or which module is absent.

    ``owner`` is the module that was being imported (e.g. ``duplex.plugins.webrtc.cli``),
    used to guess the extra when the missing module is the plugin itself.
    """
    missing = exc.name or "?"
    hint = _plugin_name(owner) if owner else None
    extra = extra_for_module(missing, hint=hint)
    if extra is not None:
        return MissingExtraError(
            f"{context} needs {missing!r}, which is not installed: "
            f"pip install '{DIST_NAME}[{extra}]'",
            extra=extra,
            module=missing,
        )
    return MissingExtraError(
        f"{context} needs the module {missing!r}, which is not installed", module=missing
    )


def load_entry_point(ep: EntryPoint, *, what: str) -> Any:
    """``ep.load()``; a missing dependency is a `MissingExtraError`, any other failure a
    `ConfigurationError` (e.g. a system library such as PortAudio is absent)."""
    try:
        return ep.load()
    except ModuleNotFoundError as e:
        owner = ep.value.split(":")[0]
        raise missing_extra_error(e, context=f"{what} {ep.name!r}", owner=owner) from e
    except Exception as e:
        raise ConfigurationError(
            f"{what} {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
        ) from e


# --- backends ------------------------------------------------------------------------------
def default_backend_name(environ: Mapping[str, str] | None = None) -> str:
    """The backend `choose_backend(None)` picks: openai, vllm or offline, from the environment."""
    return _default_backend_name(os.environ if environ is None else environ)[0]


def _default_backend_name(environ: Mapping[str, str]) -> tuple[str, str]:
    if environ.get("OPENAI_API_KEY"):
        return "openai", "OPENAI_API_KEY is set"
    if environ.get("DUPLEX_VLLM_URL"):
        return "vllm", "DUPLEX_VLLM_URL is set"
    return "offline", "neither OPENAI_API_KEY nor DUPLEX_VLLM_URL is set"


def choose_backend(name: str | None = None, *, environ: Mapping[str, str] | None = None) -> Backend:
    """The backend named by ``--backend``, or the automatic choice from the environment.

    Backend entry points are factories callable with no arguments; they read their
    own configuration (API keys, URLs) from the environment.
    """
    env = os.environ if environ is None else environ
    reason = "--backend"
    if name is None:
        name, reason = _default_backend_name(env)
    found = {ep.name: ep for ep in entry_points(group=BACKEND_GROUP)}
    hidden = {ep.name: ep for ep in entry_points(group=TESTING_BACKEND_GROUP)}
    if name not in found and name not in hidden:
        raise ConfigurationError(
            f"unknown backend {name!r}; installed backends: {', '.join(sorted(found)) or 'none'}"
        )
    ep = found.get(name) or hidden[name]
    try:
        factory = load_entry_point(ep, what="backend")
        if not callable(factory):
            raise ConfigurationError(f"backend entry point {name!r} is not callable")
        backend = factory()
    except (ImportError, MissingExtraError) as e:
        # The entry point names the extra that makes this backend whole (``offline`` needs
        # ``[local]``: Whisper, Piper and the VAD), which beats the one of a single module.
        if not ep.extras:
            raise
        wanted = ", ".join(ep.extras)
        raise MissingExtraError(
            f"backend {name!r} needs {getattr(e, 'name', None) or getattr(e, 'module', None)!r}, "
            f"which is not installed: pip install '{DIST_NAME}[{wanted}]'",
            extra=ep.extras[0],
            module=getattr(e, "name", None) or getattr(e, "module", None),
        ) from e
    except ConfigurationError:
        raise
    except Exception as e:
        raise ConfigurationError(
            f"backend {name!r} could not be created: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            f"backend {name!r} produced {type(backend).__name__}, not a duplex Backend"
        )
    log.info("backend: %s (%s)", name, reason)
    return backend


# --- VAD ---------------------------------------------------------------------------------
def default_vad() -> Any | None:
    """WebRTC's VAD when its extra is installed, else None (the session's energy VAD).

    A browser or laptop microphone is noisier than the energy detector likes; this is the
    one default for `agent dev`, `console`, `join` and `run`.
    """
    for ep in entry_points(group=VAD_GROUP):
        if ep.name == DEFAULT_VAD:
            try:
                factory = ep.load()
            except ImportError:
                return None
            return factory()
    return None


_turn_logged = False


def default_turn(backend: object | None = None) -> TurnOptions | None:
    """Turn options with the Smart Turn end-of-turn model where installed, else None.

    ``backend`` (the call's) lets the model choose what it can use, e.g. text from a
    local speech-to-text model. None keeps the session's silence rule; which one
    applies is logged once (INFO).
    """
    global _turn_logged
    options: TurnOptions | None = None
    for ep in entry_points(group=TURN_GROUP):
        if ep.name == DEFAULT_TURN:
            try:
                options = ep.load()(backend)
            except ImportError:
                options = None
            except Exception as e:  # a broken model file must not stop calls from starting
                log.warning("end-of-turn model unavailable: %s: %s", type(e).__name__, e)
                options = None
            break
    if not _turn_logged:
        _turn_logged = True
        if options is not None and options.end_of_turn is not None:
            log.info("end of turn: %s", type(options.end_of_turn).__name__)
        else:
            log.info(
                "end of turn: %.0f ms of silence (for the Smart Turn model: "
                "pip install 'duplex-agents[smart_turn]')",
                TurnOptions().silence_duration_ms,
            )
    return options


# --- servers ------------------------------------------------------------------------------
@contextmanager
def translate_bind_errors(host: str, port: int) -> Iterator[None]:
    """Turn "address already in use" into a `PortInUseError` that suggests ``--port``."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.EADDRINUSE or "address already in use" in str(e).lower():
            raise PortInUseError(
                f"port {port} on {host} is already in use; stop the other server or pass "
                f"--port (0 picks a free one)"
            ) from e
        raise
