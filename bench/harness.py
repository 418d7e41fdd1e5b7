"""What every in-process bench needs: moto (mocked in this process) with template.yaml's resources,
the Graph emulator on a real port (and the Google emulator, so nothing can reach the real Google), and the
environment the named functions get in the template."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "layers/core")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


@contextmanager
def in_process_stack(*functions: str) -> Iterator[Any]:
    """Yields the Graph emulator; calbot then talks to moto and to it exactly as the functions would."""
    os.environ.update(
        {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from moto import mock_aws

    from local.aws_bootstrap import create_resources
    from local.emulators.google import GoogleEmulator
    from local.emulators.graph import GraphEmulator
    from local.servers import serve
    from local.template import load_template

    graph = GraphEmulator()
    server = serve(graph, name="graph")
    google_server = serve(GoogleEmulator(), name="google")
    try:
        with mock_aws():
            template = load_template(
                ROOT / "template.yaml",
                parameter_overrides={
                    "Stage": "bench",
                    "GraphBaseUrl": f"{server.url}/v1.0",
                    "MicrosoftLoginBaseUrl": server.url,
                    "GoogleOAuthBaseUrl": google_server.url,
                    "GoogleUserinfoUrl": f"{google_server.url}/v1/userinfo",
                    "GoogleCalendarBaseUrl": f"{google_server.url}/calendar/v3",
                },
            )
            create_resources(template, boto3.session.Session())
            for name in functions:
                os.environ.update(template.functions[name].environment)
            yield graph
    finally:
        server.shutdown()
        google_server.shutdown()
