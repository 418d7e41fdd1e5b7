"""Our identifiers: stable, opaque, and unique across users, providers and accounts.

An id starts with a short digest of what the store lists it by, so that a list is a range of the
user's partition (`begins_with` on the sort key) and not an index entry written with every item:
- an event id, of its account (`evt_<account prefix><event digest>`): one account's events are
  `EVENT#evt_<account prefix>...` (calbot.store.events);
- a bot id, of its series (`sb_<series prefix><random>`): one series' bots are `BOT#sb_<series
  prefix>...` (calbot.store.bots).
A prefix is 40 bits: two accounts (or series) of one user may share one, so every such range read
also checks the account (or series) of each item it finds; the prefix only narrows the read.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from calbot.models import account_key

EVENT_ID_PREFIX = "evt_"
BOT_ID_PREFIX = "sb_"
PREFIX_LENGTH = 8  # base32 characters: 40 bits


def _digest(*parts: str) -> str:
    raw = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(raw).decode().rstrip("=").lower()[:26]


def account_prefix(user_id: str, provider: str, account_id: str) -> str:
    """The start of every event id of one account (the account compared as calbot.models.account_key
    does, case-insensitively)."""
    return EVENT_ID_PREFIX + _digest("account", user_id, provider, account_key(account_id))[:PREFIX_LENGTH]


def event_id(user_id: str, provider: str, account_id: str, platform_id: str) -> str:
    """Same provider event seen again -> same id; the same provider id in another account -> another id."""
    return account_prefix(user_id, provider, account_id) + _digest(
        user_id, provider, account_key(account_id), platform_id
    )


def series_prefix(user_id: str, series_key: str) -> str:
    """The start of every bot id of one series (or single event) of the user's."""
    return BOT_ID_PREFIX + _digest("series", user_id, series_key)[:PREFIX_LENGTH]


def bot_id(user_id: str, series_key: str) -> str:
    """A new bot id: its series' prefix and 64 random bits (the whole id is as long as it was before
    the prefix; a repeat within one series would be refused by the bot's conditional put)."""
    return series_prefix(user_id, series_key) + secrets.token_hex(8)
