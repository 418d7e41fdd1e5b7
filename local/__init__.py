"""The local stack: emulators, gateway, clock and tools. Never imported by production code.

Local tools run the Lambda handlers in-process, so the core layer is put on sys.path here, as Lambda
mounts a layer's `python/` directory on the path.
"""

import sys
from pathlib import Path

_CORE = str(Path(__file__).resolve().parent.parent / "layers" / "core")
if _CORE not in sys.path:
    sys.path.insert(0, _CORE)
