"""A receiver sink standing in for a customer's webhook endpoint (the local stack's, like the bot sink).

It records every delivery (headers and body, whatever it answered) and can be told to misbehave, on the
stack's clock (calbot's `timeutil.now()` when importable, so virtual time governs it):

* answer a given status for a number of calls, or until a clock time (`fail`);
* be down, its port refusing connections (the listening socket is closed, as a receiver whose server
  is off), until a clock time (`down_until`); it comes back on the same port when the clock gets
  there: the stack calls `tick()` whenever its clock moves, and a watcher thread checks in real time.

Two servers: the receiver itself (`url`, the only origin the stack allows through
WEBHOOK_ALLOWED_TEST_ORIGINS), and the control API (`control_url`), which stays up while the receiver
is down:

* `GET /_control/deliveries` -> `{"value": [...]}` answered deliveries, oldest first: {time, path,
  status, headers (lower-case names), body (text)}; `DELETE` forgets them.
* `GET /_control/faults`; `POST /_control/faults` with `{"status", "times"}`, `{"status",
  "until": iso}` / `{"status", "seconds"}`, `{"down_until": iso}` / `{"down_seconds"}`;
  `DELETE /_control/faults` clears every fault (and brings the receiver back up).

Never import the production package statically from here (only `calbot.timeutil`, lazily, as the
clock); production code never imports this.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.bots import _default_now, _iso, _json, _parse_time
from local.servers import RunningServer, serve

Clock = Callable[[], datetime]


class WebhookSink:
    """Thread-safe. `start()` opens both servers; `stop()` closes them."""

    def __init__(self, *, host: str = "127.0.0.1", clock: Clock | None = None) -> None:
        self.host = host
        self._clock = clock
        self._lock = threading.RLock()
        self._deliveries: list[dict[str, Any]] = []
        self._fail_status = 503
        self._fail_times = 0
        self._status_until: datetime | None = None
        self._down_until: datetime | None = None
        self._receiver: RunningServer | None = None
        self._control: RunningServer | None = None
        self.port = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def now(self) -> datetime:
        return (self._clock or _default_now)()

    # -- servers -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._receiver = serve(self.receive, host=self.host, port=0, name="webhook-sink")
        self.port = self._receiver.port
        self._control = serve(self.control, host=self.host, port=0, name="webhook-sink-control")
        self._watcher = threading.Thread(target=self._watch, name="webhook-sink-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for server in (self._receiver, self._control):
                if server is not None:
                    server.shutdown()
            self._receiver = self._control = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        assert self._control is not None, "start() first"
        return self._control.url

    @property
    def is_up(self) -> bool:
        with self._lock:
            return self._receiver is not None

    def _watch(self) -> None:
        while not self._stopping.wait(0.05):
            self.tick()

    def tick(self, *_: object) -> None:
        """Bring the receiver back when its outage is over (the stack's clock listener calls this)."""
        with self._lock:
            if self._down_until is not None and self.now() >= self._down_until:
                self._down_until = None
            if self._down_until is None and self._receiver is None and not self._stopping.is_set():
                self._receiver = serve(self.receive, host=self.host, port=self.port, name="webhook-sink")

    # -- Python control API ------------------------------------------------------------------------

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(self._deliveries))

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def fail(self, status: int = 503, times: int = 1) -> None:
        """Answer the next `times` deliveries with `status`."""
        self._check_status(status)
        with self._lock:
            self._fail_status, self._fail_times, self._status_until = int(status), int(times), None

    def answer_until(self, status: int, moment: datetime) -> None:
        """Answer every delivery with `status` until `moment` (the sink's clock)."""
        self._check_status(status)
        with self._lock:
            self._fail_status, self._fail_times, self._status_until = int(status), 0, moment

    def down_until(self, moment: datetime) -> None:
        """Refuse connections until `moment` (the sink's clock): the receiver's socket is closed."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        with self._lock:
            self._down_until = moment
            receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.shutdown()

    def down(self, seconds: float) -> datetime:
        until = self.now() + timedelta(seconds=float(seconds))
        self.down_until(until)
        return until

    def clear(self) -> None:
        with self._lock:
            self._fail_times, self._fail_status, self._status_until = 0, 503, None
            self._down_until = None
        self.tick()

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return {
                "fail": {"status": self._fail_status, "times": self._fail_times},
                "status_until": _iso(self._status_until) if self._status_until else None,
                "down_until": _iso(self._down_until) if self._down_until else None,
                "up": self._receiver is not None,
            }

    @staticmethod
    def _check_status(status: int) -> None:
        if not 100 <= int(status) <= 599:
            raise ValueError("status must be an HTTP status (100-599)")

    # -- the receiver ------------------------------------------------------------------------------

    def receive(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        now = self.now()
        with self._lock:
            if self._fail_times > 0:
                self._fail_times -= 1
                status = self._fail_status
            elif self._status_until is not None and now < self._status_until:
                status = self._fail_status
            else:
                status = 200
            self._deliveries.append(
                {
                    "time": _iso(now),
                    "path": request.full_path.rstrip("?"),
                    "method": request.method,
                    "status": status,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "body": request.get_data(as_text=True),
                }
            )
        body = {"received": status < 300} if status != 204 else None
        response = _json(status, body) if body is not None else Response(status=204)
        return response(environ, start_response)

    # -- the control API ---------------------------------------------------------------------------

    def control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except (TypeError, ValueError, KeyError) as exc:
            response = _json(400, {"error": str(exc)})
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        self.tick()
        path = request.path.rstrip("/")
        if path == "/_control/deliveries":
            if request.method == "DELETE":
                self.clear_deliveries()
                return Response(status=204)
            return _json(200, {"value": self.deliveries()})
        if path != "/_control/faults":
            return _json(404, {"error": "not_found", "detail": f"no route {request.path}"})
        if request.method == "DELETE":
            self.clear()
            return Response(status=204)
        if request.method == "POST":
            body = request.get_json(force=True, silent=True)
            if not isinstance(body, dict) or not body:
                raise ValueError("body must be a non-empty JSON object")
            known = {"status", "times", "until", "seconds", "down_until", "down_seconds"}
            unknown = sorted(set(body) - known)
            if unknown:
                raise ValueError(f"expected some of {sorted(known)}; unknown: {unknown}")
            if "until" in body or "seconds" in body:
                moment = (
                    _parse_time(body["until"])
                    if "until" in body
                    else self.now() + timedelta(seconds=float(body["seconds"]))
                )
                self.answer_until(int(body.get("status", 503)), moment)
            elif "status" in body or "times" in body:
                self.fail(int(body.get("status", 503)), int(body.get("times", 1)))
            if "down_until" in body:
                self.down_until(_parse_time(body["down_until"]))
            if "down_seconds" in body:
                self.down(float(body["down_seconds"]))
        return _json(200, self.faults())
