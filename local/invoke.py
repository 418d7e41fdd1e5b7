"""Docker-free stand-in for ``sam local invoke``: run one function's handler against the local stack.

    python -m local.invoke <LogicalId> [-e EVENT|-] [--state-dir .local] [--parameter-overrides K=V ...]

It reads the running local stack's ``<state-dir>/stack.json`` (written by ``local/stack.py``), gives
the process exactly the function's environment from template.yaml (Globals merged, the stack's
parameter overrides applied) plus the stack's AWS endpoint/credentials and Lambda's reserved
variables, imports the handler like Lambda would (code dir and the template's layers on sys.path),
calls it with the event (default ``events/<LogicalId>.json``) and a Lambda-like context, and prints
as ``sam local invoke`` does: START/END/REPORT and the function's own output on stderr, the result as
one JSON line on stdout, or Lambda's error object on stdout with exit status 1.

This module also holds what the gateway shares with it: ``LambdaContext``, ``import_handler`` and
``marshal`` (Lambda's JSON serialisation of a handler's return value).
"""

from __future__ import annotations

import argparse
import contextlib
import decimal
import hashlib
import importlib.util
import itertools
import json
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from local import iam_enforce
from local.template import FunctionSpec, Template, TemplateError, load_template, parse_overrides

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = ".local"
STATE_FILE = "stack.json"
AWS_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# Parent-process variables a Python process needs to work at all; everything else is replaced by the
# function's own environment, as in Lambda (and so real credentials in the shell never leak in).
_KEEP_FROM_PARENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM")

Handler = Callable[[Any, Any], Any]


class StackNotRunning(Exception):
    """No ``stack.json``: the local stack has not been started."""


class InvocationError(Exception):
    """The handler failed; ``payload`` is Lambda's error object for it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType')}: {payload.get('errorMessage')}")
        self.payload = payload


# --------------------------------------------------------------------------------------------------
# Lambda context

# The virtual sleeps of the invocation running in this context (the gateway sets it for each
# invocation; the local clock adds to it). An invocation's time is its own: real time, its own virtual
# sleeps and the clock's advances, never another invocation's virtual sleep.
_INVOCATION_SLEEPS: ContextVar[list[float] | None] = ContextVar("local_invocation_sleeps", default=None)


def record_virtual_sleep(seconds: float) -> None:
    """Count a virtual sleep against the invocation that made it (if one is running here)."""
    slept = _INVOCATION_SLEEPS.get()
    if slept is not None:
        slept[0] += seconds


def track_virtual_sleeps(slept: list[float]) -> None:
    """Make ``slept`` the current invocation's virtual-sleep counter (in the handler's context)."""
    _INVOCATION_SLEEPS.set(slept)


class LambdaContext:
    """The context object Lambda's Python runtime passes to a handler (same attribute names)."""

    def __init__(
        self,
        spec: FunctionSpec,
        request_id: str | None = None,
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function_name = spec.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # The real runtime reads this from AWS_LAMBDA_FUNCTION_MEMORY_SIZE, so it is a string there too.
        self.memory_limit_in_mb = str(spec.memory_size)
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        # `clock` is seconds on any scale (the local stack passes its possibly virtual clock, so a
        # virtual sleep or an advance counts against the Timeout exactly like real time).
        self._clock = clock
        self._deadline = (started if started is not None else clock()) + spec.timeout

    @property
    def deadline(self) -> float:
        """When the function's Timeout passes, on the context's clock."""
        return self._deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext({self.function_name!r}, aws_request_id={self.aws_request_id!r})"


# --------------------------------------------------------------------------------------------------
# Importing handlers

_import_lock = threading.RLock()
_module_counter = itertools.count()


def add_layer_paths(spec: FunctionSpec) -> None:
    """Put the function's layers on sys.path, as Lambda's /opt/python is."""
    for layer_dir in spec.layer_dirs:
        if str(layer_dir) not in sys.path:
            sys.path.insert(0, str(layer_dir))


def import_handler(spec: FunctionSpec, *, fresh: bool = False) -> Handler:
    """Import ``spec``'s module by file path and return its handler callable.

    Every function's file is called app.py, so each gets a unique module name,
    ``_lambda_<LogicalId>_<hash of the file's path>``: one module per file, imported once
    (``fresh=True`` adds a counter to force a new cold import). The code dir is on sys.path only
    while the module executes: other functions' code must not shadow it later.
    """
    if not spec.module_path.is_file():
        raise TemplateError(f"{spec.logical_id}: handler file {spec.module_path} does not exist")
    path_hash = hashlib.sha256(str(spec.module_path).encode()).hexdigest()[:8]
    module_name = f"_lambda_{spec.logical_id}_{path_hash}"
    if fresh:
        module_name += f"_{next(_module_counter)}"
    with _import_lock:
        module: ModuleType | None = None if fresh else sys.modules.get(module_name)
        if module is None:
            add_layer_paths(spec)
            module_spec = importlib.util.spec_from_file_location(module_name, spec.module_path)
            if module_spec is None or module_spec.loader is None:
                raise TemplateError(f"{spec.logical_id}: cannot import {spec.module_path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module  # registered first, as a normal import would
            sys.path.insert(0, str(spec.code_uri))
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            finally:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(spec.code_uri))
    handler = getattr(module, spec.handler_name, None)
    if not callable(handler):
        raise TemplateError(f"{spec.logical_id}: {spec.module_path} has no callable {spec.handler_name!r}")
    return handler


# --------------------------------------------------------------------------------------------------
# Marshalling and errors, as Lambda's Python runtime does them


def _decimal_default(obj: Any) -> Any:
    # Lambda's runtime serialises Decimal (boto3's DynamoDB numbers) as a number; anything else fails.
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def marshal(result: Any) -> str:
    """Serialise a handler's return value like Lambda; raises ``InvocationError`` (Runtime.MarshalError)."""
    try:
        return json.dumps(result, default=_decimal_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvocationError(
            {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError"}
        ) from exc


def error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """Lambda's error object for an unhandled exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


# --------------------------------------------------------------------------------------------------
# Environment


def runtime_environment(spec: FunctionSpec, region: str) -> dict[str, str]:
    """Lambda's reserved variables for ``spec`` (those a handler or Powertools may read)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime or 'python3.12'}",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LAMBDA_TASK_ROOT": str(spec.code_uri),
        "_HANDLER": spec.handler,
        "TZ": ":UTC",
        # sam local invoke sets this; Powertools' Tracer uses it to stay off without an X-Ray daemon.
        "AWS_SAM_LOCAL": "true",
    }


def function_environment(spec: FunctionSpec, aws_env: Mapping[str, str], region: str) -> dict[str, str]:
    """Everything the invoked function sees: reserved vars, the stack's AWS settings, its template env."""
    env = runtime_environment(spec, region)
    env.update({k: str(v) for k, v in aws_env.items()})
    env.update(spec.environment)
    return env


@contextlib.contextmanager
def patched_process(env: Mapping[str, str], paths: Sequence[Path]) -> Iterator[None]:
    """Give the process exactly ``env`` (plus the few parent vars Python needs) and ``paths`` first
    on sys.path, restoring both afterwards so a direct in-process call leaves no trace."""
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    os.environ.clear()
    os.environ.update({k: saved_env[k] for k in _KEEP_FROM_PARENT if k in saved_env})
    os.environ.update(env)
    time.tzset()
    sys.path[:0] = [str(p) for p in paths if str(p) not in sys.path]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()
        sys.path[:] = saved_path


# --------------------------------------------------------------------------------------------------
# One invocation


class _Timeout(BaseException):
    """Raised into the handler when its Timeout passes (BaseException: `except Exception` can't eat it)."""


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    # Lambda kills a function at its Timeout. SIGALRM is the closest in-process stand-in; it only
    # works on the main thread, so elsewhere the limit is not enforced.
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Invocation:
    request_id: str
    function: FunctionSpec
    result: Any = None  # the JSON value Lambda would return (after marshalling)
    error: dict[str, Any] | None = None
    init_ms: float = 0.0
    duration_ms: float = 0.0
    max_memory_mb: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def billed_ms(self) -> int:
        return max(1, math.ceil(self.duration_ms))  # Lambda bills per started millisecond


def read_state(state_dir: str | Path) -> dict[str, Any]:
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise StackNotRunning(f"no local stack state at {path}: start the local stack with `make dev` first")
    return json.loads(path.read_text(encoding="utf-8"))


def template_for_state(
    state: Mapping[str, Any],
    *,
    template_path: str | Path = REPO_ROOT / "template.yaml",
    parameter_overrides: Mapping[str, str] | None = None,
) -> Template:
    """template.yaml resolved the way the running stack resolved it (its overrides, name, endpoint)."""
    aws_env = state.get("aws_env") or {}
    overrides = {**(state.get("parameter_overrides") or {}), **(parameter_overrides or {})}
    kwargs: dict[str, Any] = {}
    if state.get("stack_name"):
        kwargs["stack_name"] = state["stack_name"]
    if aws_env.get("AWS_DEFAULT_REGION"):
        kwargs["region"] = aws_env["AWS_DEFAULT_REGION"]
    # No endpoint_url: the stack resolves queue URLs in their AWS form too (moto accepts it), and the
    # function must see exactly the environment it has behind the gateway.
    return load_template(template_path, overrides, **kwargs)


def run_invocation(
    template: Template,
    logical_id: str,
    event: Any,
    *,
    aws_env: Mapping[str, str],
    log: Any = None,
) -> Invocation:
    """Cold-start ``logical_id``'s handler in this process and call it once, writing Lambda-style
    log lines (and the function's own stdout) to ``log`` (default stderr)."""
    log = log or sys.stderr
    spec = template.function(logical_id)
    request_id = str(uuid.uuid4())
    inv = Invocation(request_id=request_id, function=spec)
    env = function_environment(spec, aws_env, template.region)
    # As behind the gateway: the function's AWS calls are checked against its role (local/iam_enforce.py).
    principal = iam_enforce.FunctionPolicies(template).principal(logical_id)
    iam_enforce.install()
    print(f"START RequestId: {request_id} Version: $LATEST", file=log, flush=True)
    with (
        patched_process(env, [spec.code_uri, *spec.layer_dirs]),
        contextlib.redirect_stdout(log),
        iam_enforce.acting_as(principal),
    ):
        init_start = time.perf_counter()
        try:
            handler = import_handler(spec, fresh=True)
        except Exception as exc:  # an import-time failure is Lambda's Runtime.ImportModuleError
            inv.error = {
                "errorMessage": f"Unable to import module '{spec.handler.rpartition('.')[0]}': {exc}",
                "errorType": "Runtime.ImportModuleError",
                "requestId": request_id,
                "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
            }
            handler = None
        inv.init_ms = (time.perf_counter() - init_start) * 1000
        started = time.perf_counter()
        if handler is not None:
            context = LambdaContext(spec, request_id, started=time.monotonic())
            try:
                with _time_limit(spec.timeout):
                    raw = handler(event, context)
                inv.result = json.loads(marshal(raw))
            except _Timeout:
                inv.error = {
                    "errorMessage": (
                        f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds"
                    ),
                    "errorType": "Sandbox.Timedout",
                }
            except InvocationError as exc:
                inv.error = {**exc.payload, "requestId": request_id}
            except Exception as exc:
                inv.error = error_payload(exc, request_id)
                # Lambda logs the failure in the function's log stream too.
                print(f"[ERROR] {type(exc).__name__}: {exc}", file=log)
                traceback.print_exception(exc, file=log)
        inv.duration_ms = (time.perf_counter() - started) * 1000
    inv.max_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    print(f"END RequestId: {request_id}", file=log)
    print(
        f"REPORT RequestId: {request_id}  Duration: {inv.duration_ms:.2f} ms  "
        f"Billed Duration: {inv.billed_ms} ms  Memory Size: {spec.memory_size} MB  "
        f"Max Memory Used: {inv.max_memory_mb} MB  Init Duration: {inv.init_ms:.2f} ms",
        file=log,
        flush=True,
    )
    return inv


def default_event_path(logical_id: str) -> Path:
    return REPO_ROOT / "events" / f"{logical_id}.json"


def invoke(
    logical_id: str,
    event: Any = None,
    *,
    state_dir: str | Path = REPO_ROOT / DEFAULT_STATE_DIR,
    template_path: str | Path = REPO_ROOT / "template.yaml",
    parameter_overrides: Mapping[str, str] | None = None,
    log: Any = None,
) -> Any:
    """Invoke one function against the running stack and return what it returned (JSON-marshalled).

    ``event=None`` uses ``events/<LogicalId>.json``. Raises ``StackNotRunning`` without a stack,
    ``InvocationError`` (with Lambda's error object) when the handler fails.
    """
    state = read_state(state_dir)
    template = template_for_state(state, template_path=template_path, parameter_overrides=parameter_overrides)
    if event is None:
        event = json.loads(default_event_path(logical_id).read_text(encoding="utf-8"))
    inv = run_invocation(template, logical_id, event, aws_env=state.get("aws_env") or {}, log=log)
    if inv.error is not None:
        raise InvocationError(inv.error)
    return inv.result


# --------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.invoke",
        description="Invoke one template.yaml function against the running local stack (sam local invoke).",
    )
    parser.add_argument("logical_id", help="the function's logical id in template.yaml")
    parser.add_argument(
        "-e", "--event", help="event JSON file, '-' = stdin (default events/<LogicalId>.json)"
    )
    parser.add_argument("--state-dir", default=str(REPO_ROOT / DEFAULT_STATE_DIR), help="stack state dir")
    parser.add_argument("-t", "--template", default=str(REPO_ROOT / "template.yaml"), help="template file")
    parser.add_argument(
        "--parameter-overrides", nargs="*", default=[], metavar="K=V", help="on top of the stack's overrides"
    )
    return parser


def _fail(message: str) -> int:
    print(f"local.invoke: {message}", file=sys.stderr)
    return 2


def _load_event(path: str | None, logical_id: str) -> Any:
    if path == "-":
        return json.load(sys.stdin)
    event_path = Path(path) if path else default_event_path(logical_id)
    if not event_path.is_file():
        raise FileNotFoundError(f"no event file {event_path} (generate with `python -m local.gen_events`)")
    return json.loads(event_path.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        state = read_state(args.state_dir)
        template = template_for_state(
            state, template_path=args.template, parameter_overrides=parse_overrides(args.parameter_overrides)
        )
        template.function(args.logical_id)  # unknown id: exit 2 before anything runs
        event = _load_event(args.event, args.logical_id)
    except (StackNotRunning, TemplateError, FileNotFoundError) as exc:
        return _fail(str(exc))
    except json.JSONDecodeError as exc:
        return _fail(f"the event is not valid JSON: {exc}")
    inv = run_invocation(template, args.logical_id, event, aws_env=state.get("aws_env") or {})
    if inv.error is not None:
        print(json.dumps(inv.error, ensure_ascii=False), flush=True)
        return 1
    print(json.dumps(inv.result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "InvocationError",
    "Invocation",
    "LambdaContext",
    "StackNotRunning",
    "error_payload",
    "function_environment",
    "import_handler",
    "invoke",
    "main",
    "marshal",
    "read_state",
    "run_invocation",
    "runtime_environment",
    "template_for_state",
]
