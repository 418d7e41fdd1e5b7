"""The secrets check (tests/e2e/test_zz_no_secrets.py) finds a secret in every form it can be written."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from local.emulators.graph import _new_access_token, _new_msa_access_token, _new_refresh_token
from tests.e2e.leaks import find_leaks

REFRESH = _new_refresh_token()  # '!', '*', '$$', '.', '_' and '-' inside
ACCESS = _new_access_token()  # a JWT: base64url parts joined by '.'
MSA_ACCESS = _new_msa_access_token()  # standard base64: '+', '/' and '='
CLIENT_SECRET = "e2e-client-secret-5f1c9b7e0d"

FORMS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "url-encoded": lambda s: quote(s, safe=""),
    "form-encoded": quote_plus,
    "url-encoded, keeping /": lambda s: quote(s),
    "url-encoded twice": lambda s: quote(quote(s, safe=""), safe=""),
    "JSON string": lambda s: json.dumps(s),
    "JSON with escaped slashes": lambda s: json.dumps(s).replace("/", "\\/"),
    "JSON, all non-alphanumerics as \\u": lambda s: "".join(
        c if c.isalnum() else f"\\u{ord(c):04x}" for c in s
    ),
    "JSON inside a JSON log line": lambda s: json.dumps(json.dumps({"body": f"refresh_token={s}"})),
    "URL-encoded inside JSON": lambda s: json.dumps({"query": "a=1&token=" + quote(s, safe="")}),
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64url without padding": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "base64 of a prefixed value": lambda s: base64.b64encode(f"client-id:{s}".encode()).decode(),
}


@pytest.mark.parametrize(
    "secret",
    [REFRESH, ACCESS, MSA_ACCESS, CLIENT_SECRET],
    ids=["refresh", "access", "personal access", "client secret"],
)
@pytest.mark.parametrize("form", list(FORMS))
def test_a_secret_is_found_in_every_form(secret: str, form: str) -> None:
    line = f'{{"level":"INFO","message":"request","detail":"x {FORMS[form](secret)} y"}}\n'
    log = "starting stack\n" * 50 + line + "stopping\n" * 50
    leaks = find_leaks([secret, _new_refresh_token()], {"stack log": log, "responses": "{}"})
    assert leaks == {"stack log": [secret[:12] + "..."]}


def test_nothing_is_reported_for_clean_text_or_other_secrets() -> None:
    clean = json.dumps({"id": "evt_123", "token": "***", "hash": base64.b64encode(b"x" * 40).decode()})
    assert find_leaks([REFRESH, ACCESS, CLIENT_SECRET], {"log": clean, "responses": clean * 3}) == {}


def test_a_token_in_clear_in_a_table_item_is_found_and_an_encrypted_one_is_not() -> None:
    from tests.e2e.leaks import table_text

    plain = {
        "PK": {"S": "USER#u"},
        "SK": {"S": "TOKEN#outlook/a"},
        "blob": {"B": b"\x01\x02" + ACCESS.encode()},
    }
    as_string = {"PK": {"S": "USER#u"}, "SK": {"S": "X"}, "v": {"M": {"t": {"S": REFRESH}}}}
    sealed = {"PK": {"S": "USER#u"}, "SK": {"S": "TOKEN#outlook/a"}, "blob": {"B": bytes(range(256)) * 8}}
    assert find_leaks([ACCESS], {"table": table_text([plain])}) == {"table": [ACCESS[:12] + "..."]}
    assert find_leaks([REFRESH], {"table": table_text([as_string])}) == {"table": [REFRESH[:12] + "..."]}
    assert find_leaks([ACCESS, REFRESH], {"table": table_text([sealed])}) == {}
