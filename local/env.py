"""Print shell exports for talking to the running local stack (`eval "$(python -m local.env)"`).

Gives the admin CLI and ad-hoc scripts the same environment the handlers get: the template's resolved
variables plus moto's endpoint and fake credentials. With `--urls`, only the stack's endpoints, for the
README's curls: API (…/api/v1), STACK_URL (/_local/… control), GRAPH_URL, GOOGLE_URL, BOTS_URL,
WEBHOOK_SINK_URL, WEBHOOK_SINK_CONTROL.

The state directory is the argument, else $CALBOT_STATE_DIR, else .local (where `make dev` writes it).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from local.template import load_template

ROOT = Path(__file__).resolve().parent.parent


def stack_environment(state_dir: Path = ROOT / ".local") -> dict[str, str]:
    state = state_dir / "stack.json"
    if not state.exists():
        raise SystemExit("the local stack is not running: start it with `make dev` first")
    info = json.loads(state.read_text())
    template = load_template(
        ROOT / "template.yaml", parameter_overrides=info["parameter_overrides"], stack_name=info["stack_name"]
    )
    env: dict[str, str] = {}
    for fn in template.functions.values():
        env.update(fn.environment)
    env.update(info["aws_env"])
    return env


def stack_urls(state_dir: Path = ROOT / ".local") -> dict[str, str]:
    state = state_dir / "stack.json"
    if not state.exists():
        raise SystemExit("the local stack is not running: start it with `make dev` first")
    info = json.loads(state.read_text())
    return {
        "API": info["api_url"],
        "STACK_URL": info["control_url"],
        "GRAPH_URL": info["graph_url"],
        "GOOGLE_URL": info["google_url"],
        "BOTS_URL": info["bots_url"],
        "WEBHOOK_SINK_URL": info["webhook_sink_url"],  # a customer's receiver (register it: POST /webhooks)
        "WEBHOOK_SINK_CONTROL": info["webhook_sink_control_url"],  # its deliveries and faults (/_control)
    }


def main() -> int:
    args = sys.argv[1:]
    urls_only = "--urls" in args
    args = [arg for arg in args if arg != "--urls"]
    default = os.environ.get("CALBOT_STATE_DIR") or ROOT / ".local"
    state_dir = Path(args[0]) if args else Path(default)
    values = stack_urls(state_dir) if urls_only else stack_environment(state_dir)
    for key, value in sorted(values.items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
