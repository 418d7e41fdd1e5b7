"""Print shell exports for talking to the running local stack (`eval "$(python -m local.env)"`).

Gives the admin CLI and ad-hoc scripts the same environment the handlers get: the template's resolved
variables plus moto's endpoint and fake credentials.
"""

from __future__ import annotations

import json
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


def main() -> int:
    state_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".local"
    for key, value in sorted(stack_environment(state_dir).items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
