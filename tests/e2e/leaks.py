"""Find secrets in text whatever form they were written in: raw, URL-encoded (once or twice),
JSON-escaped (`\\/`, `\\u002b`, a JSON string inside a JSON log line), or base64 of the secret.

Rather than encoding every secret every way and scanning the whole text for each, the text is decoded
every way once; the decoded variants are cut into runs of characters that can be part of a token, and
each secret is looked up in those runs. A secret with other characters is searched in the full variants.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

# Characters that appear in the tokens and secrets we issue or are given (base64, base64url, MSA refresh
# tokens' `!*$`, Google's `ya29.`, client secrets' `~-_.`).
_TOKEN_CHARS = r"A-Za-z0-9!*$+/=._~-"
_RUN = re.compile(f"[{_TOKEN_CHARS}]{{8,}}")
_ONLY_TOKEN_CHARS = re.compile(f"[{_TOKEN_CHARS}]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)")
_JSON_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _json_unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return chr(int(match.group(1), 16))
        char = match.group(2)
        return _JSON_SIMPLE.get(char, char)

    return _JSON_ESCAPE.sub(one, text)


def _base64_decoded(text: str) -> str:
    """Every base64 / base64url run decoded (at each alignment), as text, one per line."""
    out: list[str] = []
    for run in set(_BASE64_RUN.findall(text)):
        body = run.rstrip("=")
        for shift in range(4):
            part = body[shift:]
            if len(part) % 4 == 1:  # one character too many for any alignment: drop it
                part = part[:-1]
            if len(part) < 16:
                continue
            part += "=" * (-len(part) % 4)
            decoder = base64.urlsafe_b64decode if ("-" in part or "_" in part) else base64.b64decode
            try:
                out.append(decoder(part).decode("latin-1"))
            except (binascii.Error, ValueError):
                continue
    return "\n".join(out)


def decoded_variants(text: str) -> list[str]:
    """The text as written, and as it reads after each decoding a log line or response may carry."""
    variants: list[str] = []
    for json_level in (text, _json_unescape(text), _json_unescape(_json_unescape(text))):
        once = unquote(json_level)
        variants += [json_level, once, unquote(once)]
    variants.append(_base64_decoded("\n".join(variants[:3])))
    unique: dict[str, None] = dict.fromkeys(variants)
    return list(unique)


def find_leaks(secrets: Iterable[str], haystacks: Mapping[str, str]) -> dict[str, list[str]]:
    """{haystack name: [the first 12 characters of each secret found in it, in any form]}; only the
    haystacks with a leak are listed. Secrets shorter than 8 characters are ignored."""
    wanted = sorted({s for s in secrets if s and len(s) >= 8})
    leaks: dict[str, list[str]] = {}
    for name, text in haystacks.items():
        variants = decoded_variants(text)
        runs = "\n".join({run for variant in variants for run in _RUN.findall(variant)})
        found = [
            secret[:12] + "..."
            for secret in wanted
            if (secret in runs if _ONLY_TOKEN_CHARS.fullmatch(secret) else any(secret in v for v in variants))
        ]
        if found:
            leaks[name] = found
    return leaks


def table_text(items: Iterable[Mapping[str, object]]) -> str:
    """DynamoDB items (the wire form, `{"S": ...}`, `{"B": ...}`) as one text for `find_leaks`: strings
    as they are, binary attributes (an encrypted secret's blob) as latin-1, so a token stored in clear in
    a blob shows up, raw or base64, like one in a string."""

    def text(value: object) -> str:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("latin-1")
        if isinstance(value, Mapping):
            return "\n".join(f"{k}\n{text(v)}" for k, v in value.items())
        if isinstance(value, list | tuple | set):
            return "\n".join(text(v) for v in value)
        return str(value)

    return "\n".join(text(item) for item in items)
