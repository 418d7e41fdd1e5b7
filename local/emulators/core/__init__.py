"""What both provider emulators share, in one place (moto's core to their per-service backends):

- `service.Emulator`: the base class: the WSGI app, the per-request pipeline and the state lock;
- `routing`: routes declared on their handlers (`@route`);
- `control`: /_control routing and the routes every emulator has;
- `backend`: access tokens, codes, app and account lookups, sync-state expiry, the consent page;
- `delivery`: the notification delivery engine (delays, windows, retries, pause/resume/flush, log);
- `faults`: fault rules (throttling, 5xx, delays);
- `requestlog`: the request log;
- `clock`: the emulators' time source (real time plus an offset the local stack's clock moves);
- `errors`, `keys`, `helpers`: control-API errors and checks, the ID-token signing key, small values.

Never imported by production code (neither are the emulators).
"""

from local.emulators.core.errors import EmulatorError
from local.emulators.core.keys import SigningKey, signing_key
from local.emulators.core.service import Emulator

__all__ = ["Emulator", "EmulatorError", "SigningKey", "signing_key"]
