"""The local stack's own control API under `/_local/`, served on the gateway's port.

JSON in and out, no auth (local only); lists come as `{"value": [...]}` like the emulators' control
APIs. Routes:

* `GET  /_local/clock` -> `{"now", "virtual", "offset_seconds"}`
* `POST /_local/clock/advance` `{"to": iso}` or `{"seconds": n}` -> a FireReport (LocalClock.advance)
* `POST /_local/clock/fire` -> a FireReport of what is due now
* `GET  /_local/crons` -> `{"value": [{id, function, event, type, expression, timezone, enabled, next}]}`
* `POST /_local/cron/{job}` -> run that cron job now (`job`: function logical id or "<Fn>.<Event>")
* `GET  /_local/schedules` -> `{"value": [{name, group, at, target_function, input, state, ...}]}`
* `POST /_local/queues/drain` -> `{"delivered": n}`
* `GET  /_local/queues/{logical_id}/messages` -> `{"queue", "value": [...]}` (peek, no receive)
* `GET  /_local/aws/faults` -> `{"value": [rule, ...]}`; `POST /_local/aws/faults` `{"service", "error",
  "operations"?, "share"?, "times"?, "after"?, "seed"?, "tps"?}` -> the rule (201; `tps`: a throughput
  quota, the calls past it per second fail); `DELETE /_local/aws/faults`
  clears them, `DELETE /_local/aws/faults/{id}` removes one (local/aws_limits.py has the errors)
* `GET  /_local/overruns` -> `{"value": [{function, kind, limit_s, elapsed_s}]}`: every invocation that
  ran past its function's Timeout (`kind: "timeout"`) or a route past API Gateway's 30 s
  (`"integration_timeout"`); the e2e session fails when it is not empty
* `GET  /_local/sleeps` -> `{"value": {function: {invocations, slept_s, max_slept_s}}}`: the virtual
  seconds handlers slept (virtual time), per function, since the start or the last `DELETE` of it
* `GET  /_local/concurrency` -> `{"local_limit", "value": {function: {limit, reserved, running, peak,
  throttles, waits, held}}}` (local/concurrency.py; `DELETE` resets peaks and counts);
  `POST /_local/concurrency/{function}/hold` `{"slots"?}` occupies that many free slots (all by
  default) as if invocations were running, `DELETE` of it gives them back: a function kept at its
  limit, so its next synchronous invoke is throttled

`with_control(app, control)` puts it in front of another WSGI app (the gateway): paths under
`/_local/` go to the control API, everything else to `app`, untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local.aws_limits import AwsFaults, FaultError
from local.clock import LocalClock, ScheduleExpressionError, iso_z

PREFIX = "/_local"
WSGIApp = Callable[..., Iterable[bytes]]


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlApp:
    """WSGI app for `/_local/...` driving a LocalClock."""

    def __init__(self, clock: LocalClock, aws_faults: AwsFaults | None = None) -> None:
        self.clock = clock
        self.aws_faults = aws_faults or AwsFaults()
        self._map = Map(
            [
                Rule(f"{PREFIX}/clock", endpoint="clock", methods=["GET"]),
                Rule(f"{PREFIX}/clock/advance", endpoint="advance", methods=["POST"]),
                Rule(f"{PREFIX}/clock/fire", endpoint="fire", methods=["POST"]),
                Rule(f"{PREFIX}/crons", endpoint="crons", methods=["GET"]),
                Rule(f"{PREFIX}/cron/<job>", endpoint="cron", methods=["POST"]),
                Rule(f"{PREFIX}/schedules", endpoint="schedules", methods=["GET"]),
                Rule(f"{PREFIX}/queues/drain", endpoint="drain", methods=["POST"]),
                Rule(f"{PREFIX}/queues/<logical_id>/messages", endpoint="messages", methods=["GET"]),
                Rule(f"{PREFIX}/aws/faults", endpoint="aws_faults", methods=["GET", "POST", "DELETE"]),
                Rule(f"{PREFIX}/aws/faults/<fault_id>", endpoint="aws_fault", methods=["DELETE"]),
                Rule(f"{PREFIX}/overruns", endpoint="overruns", methods=["GET"]),
                Rule(f"{PREFIX}/sleeps", endpoint="sleeps", methods=["GET", "DELETE"]),
                Rule(f"{PREFIX}/concurrency", endpoint="concurrency", methods=["GET", "DELETE"]),
                Rule(f"{PREFIX}/concurrency/<function>/hold", endpoint="hold", methods=["POST", "DELETE"]),
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self._map.bind_to_environ(environ).match()
            status, body = getattr(self, f"_{endpoint}")(request, **args)
        except ControlError as exc:
            status, body = exc.status, {"error": str(exc)}
        except HTTPException as exc:
            status, body = exc.code or 400, {"error": exc.description}
        except KeyError as exc:
            status, body = 404, {"error": str(exc.args[0]) if exc.args else "not found"}
        except (TypeError, ValueError, ScheduleExpressionError, FaultError) as exc:
            status, body = 400, {"error": str(exc)}
        response = Response(json.dumps(body, default=str), status=status, content_type="application/json")
        return response(environ, start_response)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        if not request.get_data():
            return {}
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise ControlError(400, "the body must be a JSON object")
        return body

    def _clock(self, request: Request) -> tuple[int, Any]:
        return 200, {
            "now": iso_z(self.clock.now()),
            "virtual": self.clock.virtual,
            "offset_seconds": self.clock.offset_seconds,
        }

    def _advance(self, request: Request) -> tuple[int, Any]:
        body = self._body(request)
        if set(body) not in ({"to"}, {"seconds"}):
            raise ControlError(400, 'give exactly one of {"to": iso} and {"seconds": n}')
        if "to" in body:
            if not isinstance(body["to"], str):
                raise ControlError(400, '"to" must be an ISO 8601 string')
            report = self.clock.advance(to=body["to"])
        else:
            if not isinstance(body["seconds"], int | float) or isinstance(body["seconds"], bool):
                raise ControlError(400, '"seconds" must be a number')
            report = self.clock.advance(seconds=float(body["seconds"]))
        return 200, report.to_dict()

    def _fire(self, request: Request) -> tuple[int, Any]:
        return 200, self.clock.fire_due().to_dict()

    def _crons(self, request: Request) -> tuple[int, Any]:
        return 200, {"value": self.clock.cron_list()}

    def _cron(self, request: Request, job: str) -> tuple[int, Any]:
        return 200, self.clock.run_cron(job)

    def _schedules(self, request: Request) -> tuple[int, Any]:
        return 200, {"value": [s.to_dict() for s in self.clock.schedules()]}

    def _drain(self, request: Request) -> tuple[int, Any]:
        return 200, {"delivered": self.clock.drain()}

    def _messages(self, request: Request, logical_id: str) -> tuple[int, Any]:
        return 200, {"queue": logical_id, "value": self.clock.queue_messages(logical_id)}

    def _aws_faults(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            return 201, self.aws_faults.add(**self._body(request)).to_dict()
        if request.method == "DELETE":
            self.aws_faults.clear()
            return 200, {"value": []}
        return 200, {"value": self.aws_faults.list()}

    def _aws_fault(self, request: Request, fault_id: str) -> tuple[int, Any]:
        self.aws_faults.remove(fault_id)
        return 200, {"removed": fault_id}

    def _overruns(self, request: Request) -> tuple[int, Any]:
        gateway = self.clock.gateway
        return 200, {"value": gateway.overruns() if gateway is not None else []}

    def _sleeps(self, request: Request) -> tuple[int, Any]:
        gateway = self.clock.gateway
        if gateway is not None and request.method == "DELETE":
            gateway.reset_virtual_sleeps()
        return 200, {"value": gateway.virtual_sleeps() if gateway is not None else {}}

    def _concurrency(self, request: Request) -> tuple[int, Any]:
        gateway = self._gateway()
        if request.method == "DELETE":
            gateway.concurrency.reset_stats()
        return 200, {"local_limit": gateway.concurrency.local_limit, "value": gateway.concurrency.stats()}

    def _hold(self, request: Request, function: str) -> tuple[int, Any]:
        gateway = self._gateway()
        if function not in gateway.template.functions:  # not a silent no-op
            raise ControlError(404, f"no function {function!r} in the template")
        if request.method == "DELETE":
            return 200, {"function": function, "released": gateway.concurrency.unhold(function)}
        slots = self._body(request).get("slots")
        if slots is not None and (not isinstance(slots, int) or isinstance(slots, bool) or slots < 0):
            raise ControlError(400, '"slots" must be a non-negative integer')
        return 200, {"function": function, "held": gateway.concurrency.hold(function, slots)}

    def _gateway(self) -> Any:
        if self.clock.gateway is None:
            raise ControlError(409, "this clock drives no gateway")
        return self.clock.gateway


def with_control(app: WSGIApp, control: WSGIApp) -> WSGIApp:
    """`app` with `control` answering every path under /_local/ (environ passed through untouched)."""

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return control(environ, start_response)
        return app(environ, start_response)

    return dispatch
