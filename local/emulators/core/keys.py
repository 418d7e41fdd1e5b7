"""The RSA key that signs both emulators' ID tokens."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SigningKey:
    """An RSA key that signs the emulators' ID tokens (RS256, like Microsoft's and Google's), with the
    public half as the JWK their key endpoints serve. Clients can verify the tokens as they would
    the real ones; nothing here is a secret worth keeping (a fresh key per process)."""

    private_key: Any
    kid: str
    jwk: dict[str, str]

    def sign(self, claims: dict[str, Any]) -> str:
        import jwt

        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@functools.cache
def signing_key() -> SigningKey:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    kid = hashlib.sha256(public_jwk["n"].encode()).hexdigest()[:27]
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": public_jwk["n"], "e": public_jwk["e"]}
    return SigningKey(private, kid, jwk)
