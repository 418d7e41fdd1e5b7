"""KMS envelope encryption for secrets kept in DynamoDB (the access-token cache, and the `dynamodb`
credential backend), with the AWS Encryption SDK.

Each value is one Encryption SDK message: a data key from KMS `GenerateDataKey` under the stage's
credential key (template.yaml `CredentialKey`, `CREDENTIAL_KEY_ARN`), AES-256-GCM with key commitment and
no signature (`AES_256_GCM_HKDF_SHA512_COMMIT_KEY`: nothing here needs a reader that may not write).
The encryption context names the item and its user; KMS binds it to the data key and the SDK
authenticates it with the message, and `decrypt` refuses a message whose context is not the one the
caller expects, so one user's ciphertext copied into another's item (or another item of the same
user) never decrypts there.

Data keys are cached in memory per context (the SDK's caching materials manager): at most
DATA_KEY_MAX_AGE seconds and DATA_KEY_MAX_USES messages each, so a warm container does not call KMS for
every value it writes or reads again. The SDK is imported on first use: handlers that never touch a
secret never pay its import.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from calbot.config import get_settings

ALGORITHM = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
DATA_KEY_MAX_AGE = 300.0  # seconds a cached data key may be used
DATA_KEY_MAX_USES = 1000  # messages one cached data key may encrypt
DATA_KEY_CACHE_ENTRIES = 512

_lock = threading.Lock()


class EnvelopeError(Exception):
    """A message that is not ours to decrypt here: wrong context, tampered, or not a message."""


@cache
def _machinery() -> tuple[Any, Any, Any]:
    """(client, caching materials manager, algorithm), built once per container."""
    import boto3
    from aws_encryption_sdk import (
        CachingCryptoMaterialsManager,
        CommitmentPolicy,
        EncryptionSDKClient,
        LocalCryptoMaterialsCache,
        StrictAwsKmsMasterKeyProvider,
    )
    from aws_encryption_sdk.identifiers import Algorithm

    key_arn = get_settings().require("credential_key_arn")
    provider = StrictAwsKmsMasterKeyProvider(
        key_ids=[key_arn], botocore_session=boto3.session.Session()._session
    )
    manager = CachingCryptoMaterialsManager(
        master_key_provider=provider,
        cache=LocalCryptoMaterialsCache(capacity=DATA_KEY_CACHE_ENTRIES),
        max_age=DATA_KEY_MAX_AGE,
        max_messages_encrypted=DATA_KEY_MAX_USES,
    )
    client = EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, max_encrypted_data_keys=1
    )
    return client, manager, getattr(Algorithm, ALGORITHM)


def encrypt(plaintext: bytes, context: dict[str, str]) -> bytes:
    client, manager, algorithm = _machinery()
    with _lock:  # the SDK's local cache is thread-safe; its KMS client creation is not
        ciphertext, _ = client.encrypt(
            source=plaintext, materials_manager=manager, encryption_context=context, algorithm=algorithm
        )
    return bytes(ciphertext)


def decrypt(ciphertext: bytes, context: dict[str, str]) -> bytes:
    """The plaintext, only if the message was made for exactly this context (EnvelopeError if not)."""
    from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError

    client, manager, _ = _machinery()
    try:
        with _lock:
            plaintext, header = client.decrypt(source=ciphertext, materials_manager=manager)
    except AWSEncryptionSDKClientError as err:
        raise EnvelopeError(type(err).__name__) from None
    found = dict(header.encryption_context)
    if any(found.get(key) != value for key, value in context.items()):
        raise EnvelopeError("the message was encrypted for another item")
    return bytes(plaintext)


def reset() -> None:
    """Forget the SDK client and cached data keys (tests that switch endpoints or keys)."""
    _machinery.cache_clear()
