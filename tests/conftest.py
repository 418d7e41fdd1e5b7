"""Shared fixtures.

`inproc_stack`: the local stack (moto server, Graph emulator, gateway) started inside the test process,
for service tests that call the core services directly and need the real provider protocol (including
the Graph validation handshake, which calls back into our webhook through the gateway).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import LocalStack


@pytest.fixture(scope="session")
def inproc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(state_dir=Path(tmp_path_factory.mktemp("inproc-stack")), seed=False)
    stack.start()
    yield stack
    stack.stop()
