"""The one logger every module uses, with a last-line-of-defence redaction of token material.

Code never logs request bodies, headers or credentials; the filter below additionally masks anything
that looks like a bearer/refresh token or a secret-named field, so a mistake cannot leak a credential.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aws_lambda_powertools import Logger

_SECRET_KEYS = re.compile(
    r"(?i)(refresh_token|access_token|client_secret|clientstate|client_state|"
    r"authorization|api_key|secret|password|token)"
)
# A JWT (a work account's Graph access token, an ID token) anywhere in a text, whatever precedes it:
# its header and claims are base64url JSON objects, so both parts start with "eyJ".
_JWT = r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
_SECRET_VALUES = re.compile(
    r"(?i)(bearer\s+[A-Za-z0-9._~+/=-]{8,}|token\s+[A-Za-z0-9._~+/=-]{16,}|"
    r"(refresh_token|access_token|client_secret|clientState)=[^&\s\"']+|" + _JWT + ")"
)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEYS.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub("***", value)
    return value


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, (str, dict)):
            record.msg = redact(record.msg)
        if record.args:
            record.args = (
                tuple(redact(a) for a in record.args) if isinstance(record.args, tuple) else record.args
            )
        for key in list(vars(record)):
            if key not in _STD_ATTRS and _SECRET_KEYS.search(key):
                setattr(record, key, "***")
        return True


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))

logger = Logger(service="calbot")
logger.addFilter(_RedactFilter())
