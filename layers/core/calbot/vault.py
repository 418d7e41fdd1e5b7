"""OAuth credentials as SSM SecureStrings, one parameter per (user, provider, account).

The per-account path isolates accounts from each other (IAM can scope to a prefix), and nothing else in
the system ever holds a refresh token or client secret. Values are JSON of `Credentials`.
"""

from __future__ import annotations

import hashlib
import re

from botocore.exceptions import ClientError

from calbot import aws
from calbot.config import get_settings
from calbot.models import Credentials, account_key

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def credential_path(user_id: str, provider: str, account_id: str) -> str:
    """`/calbot/<stage>/users/<user>/<provider>/<readable-account>-<hash>`.

    SSM names allow only `a-zA-Z0-9_.-/`, so the email is made readable-safe and a hash of the exact
    (lower-cased) account id keeps two accounts that flatten alike apart.
    """
    key = account_key(account_id)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("_", key)[:80]
    return f"{get_settings().ssm_prefix}/users/{_UNSAFE.sub('_', user_id)}/{provider}/{readable}-{digest}"


def put(path: str, creds: Credentials) -> None:
    aws.ssm().put_parameter(
        Name=path,
        Value=creds.model_dump_json(),
        Type="SecureString",
        Overwrite=True,
        Tier="Intelligent-Tiering",  # a credential with a real-sized access token passes 4 KB
        Description="calbot OAuth credentials for one connected calendar account",
    )


def get(path: str) -> Credentials | None:
    try:
        resp = aws.ssm().get_parameter(Name=path, WithDecryption=True)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return Credentials.model_validate_json(resp["Parameter"]["Value"])


def delete(path: str) -> bool:
    try:
        aws.ssm().delete_parameter(Name=path)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return False
        raise
    return True
