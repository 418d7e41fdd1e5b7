"""A sink standing in for the external Create Bot API (`POST {BOT_API_URL}/bots/create_bot`).

The local stack points the template's `BotApiUrl` at this app and stores its API key in SSM, so the
launcher runs unchanged and every bot it creates is recorded here for tests to assert on.

Service route (any path prefix, since BOT_API_URL carries one, e.g. `/api/v1`):

* `POST .../bots/create_bot` with `Authorization: Token <key>` and a JSON object holding a string
  `meeting_link` -> 201 `{"bot_id": "bot_<hex>", "status": "joining", "meeting_link": ...}`;
  wrong or missing key -> 401, bad body -> 400 `{"error": "invalid_request", ...}`.

Faults (Python methods, or `/_control/faults`), checked before authentication like a load balancer
or an outage would be: `fail(status, times)` answers the next `times` calls with `status`;
`down(seconds)` / `down_until(moment)` answers 503 until then, judged on the sink's clock, which is
calbot's `timeutil.now()` when importable (so the local stack's virtual clock governs outages) or
real UTC time, or the `clock` given to the constructor; `delay(seconds)` holds every call that long
in real time (client timeouts are real); `clear()` removes every fault.

Control routes (JSON, no auth, local only):

* `GET /_control/calls` -> `{"value": [...]}` accepted calls, oldest first;
  `DELETE /_control/calls` forgets them (and the attempts).
* `GET /_control/attempts` -> `{"value": [...]}` every call with the status it got.
* `GET /_control/faults`; `POST /_control/faults` with `{"status", "times"}`, `{"down_seconds"}`,
  `{"down_until": iso}` or `{"delay"}`; `DELETE /_control/faults`.

Never import the production package statically from here (only `calbot.timeutil`, lazily, as the
clock); production code never imports this.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

Clock = Callable[[], datetime]


def _default_now() -> datetime:
    # The local stack installs its (possibly virtual) clock in calbot.timeutil; follow it when present.
    try:
        from calbot import timeutil
    except ImportError:
        return datetime.now(UTC)
    return timeutil.now()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("down_until must be an ISO 8601 string")
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class BotSink:
    """WSGI app recording Create Bot API calls; thread-safe."""

    def __init__(self, api_key: str, *, clock: Clock | None = None) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.api_key = api_key
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._attempts: list[dict[str, Any]] = []
        self._fail_status = 503
        self._fail_times = 0
        self._down_until: datetime | None = None
        self._delay = 0.0
        self._control = Map(
            [
                Rule("/_control/calls", endpoint="calls", methods=["GET", "DELETE"]),
                Rule("/_control/attempts", endpoint="attempts", methods=["GET"]),
                Rule("/_control/faults", endpoint="faults", methods=["GET", "POST", "DELETE"]),
            ],
            strict_slashes=False,
        )

    def now(self) -> datetime:
        return (self._clock or _default_now)()

    # -- Python control API --------------------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """Accepted calls, oldest first: {bot_id, time, path, body, headers (no Authorization)}."""
        with self._lock:
            return json.loads(json.dumps(self._calls))  # deep copy: callers cannot mutate the log

    def attempts(self) -> list[dict[str, Any]]:
        """Every call to the service route with the status it was answered: {time, path, status}."""
        with self._lock:
            return [dict(a) for a in self._attempts]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()
            self._attempts.clear()

    def fail(self, status: int = 503, times: int = 1) -> None:
        """Answer the next `times` calls with `status` (a JSON error body)."""
        if not 400 <= int(status) <= 599 or int(times) < 0:
            raise ValueError("fail needs a 4xx/5xx status and times >= 0")
        with self._lock:
            self._fail_status, self._fail_times = int(status), int(times)

    def down(self, seconds: float) -> datetime:
        """Answer 503 for `seconds` from now (sink clock); returns the end of the outage."""
        until = self.now() + timedelta(seconds=float(seconds))
        self.down_until(until)
        return until

    def down_until(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        with self._lock:
            self._down_until = moment

    def delay(self, seconds: float) -> None:
        """Hold every call `seconds` (real time) before answering."""
        if float(seconds) < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)

    def clear(self) -> None:
        """Remove every fault (recorded calls are kept)."""
        with self._lock:
            self._fail_times, self._fail_status = 0, 503
            self._down_until = None
            self._delay = 0.0

    def reset(self) -> None:
        self.clear()
        self.clear_calls()

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return {
                "fail": {"status": self._fail_status, "times": self._fail_times},
                "down_until": _iso(self._down_until) if self._down_until else None,
                "delay": self._delay,
            }

    # -- WSGI ----------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/_control" or request.path.startswith("/_control/"):
            response = self._dispatch_control(request)
        elif request.path.rstrip("/").endswith("/bots/create_bot"):
            response = (
                self._create_bot(request)
                if request.method == "POST"
                else _json(405, {"error": "method_not_allowed"})
            )
        else:
            response = _json(404, {"error": "not_found", "detail": f"no route {request.path}"})
        return response(environ, start_response)

    def _create_bot(self, request: Request) -> Response:
        with self._lock:
            delay = self._delay
        if delay:
            time.sleep(delay)  # real time: what a client's HTTP timeout measures
        now = self.now()
        status, body = self._answer(request, now)
        with self._lock:
            self._attempts.append({"time": _iso(now), "path": request.path, "status": status})
        return _json(status, body)

    def _answer(self, request: Request, now: datetime) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self._down_until is not None and now < self._down_until:
                return 503, {"error": "service_unavailable", "detail": "the bot service is down"}
            if self._fail_times > 0:
                self._fail_times -= 1
                return self._fail_status, {"error": "injected_fault", "status": self._fail_status}
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Token" or key.strip() != self.api_key:
            return 401, {"error": "unauthorized", "detail": "Invalid token."}
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return 400, {"error": "invalid_request", "detail": "the body must be a JSON object"}
        link = body.get("meeting_link")
        if not isinstance(link, str) or not link.strip():
            return 400, {"error": "invalid_request", "detail": "meeting_link must be a non-empty string"}
        bot_id = f"bot_{uuid.uuid4().hex}"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        with self._lock:
            self._calls.append(
                {"bot_id": bot_id, "time": _iso(now), "path": request.path, "body": body, "headers": headers}
            )
        return 201, {"bot_id": bot_id, "status": "joining", "meeting_link": link}

    # -- control routes ------------------------------------------------------------------------------

    def _dispatch_control(self, request: Request) -> Response:
        try:
            endpoint, _ = self._control.bind_to_environ(request.environ).match()
            return getattr(self, f"_c_{endpoint}")(request)
        except HTTPException as exc:
            return _json(exc.code or 400, {"error": exc.description})
        except (TypeError, ValueError) as exc:
            return _json(400, {"error": str(exc)})

    def _c_calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_calls()
            return Response(status=204)
        return _json(200, {"value": self.calls()})

    def _c_attempts(self, request: Request) -> Response:
        return _json(200, {"value": self.attempts()})

    def _c_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear()
            return Response(status=204)
        if request.method == "POST":
            body = request.get_json(force=True, silent=True)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            known = {"status", "times", "down_seconds", "down_until", "delay"}
            unknown = sorted(set(body) - known)
            if unknown or not body:
                raise ValueError(f"expected some of {sorted(known)}; unknown: {unknown}")
            if "status" in body or "times" in body:
                self.fail(int(body.get("status", 503)), int(body.get("times", 1)))
            if "down_seconds" in body:
                self.down(float(body["down_seconds"]))
            if "down_until" in body:
                self.down_until(_parse_time(body["down_until"]))
            if "delay" in body:
                self.delay(float(body["delay"]))
        return _json(200, self.faults())
