"""Single-table DynamoDB access: the only package that talks to DynamoDB.

One module per record kind (users, rates, connections, subscriptions, locks, events, sync_states,
bots, auto_settings, webhooks), all on `base` (the table, item (de)serialisation, and the retried writes and
transactions). Each record module declares the small interface (a typing.Protocol) that services depend
on, so a service test can hand them an in-memory fake; the module itself is the real implementation.
Everything public is re-exported here: `store.get_connection(...)` is the same function as
`store.connections.get_connection(...)`. A test that replaces a function must replace it where its
caller looks it up (a service calling `store.x` looks on this package; a store module calling another
one's function, and calbot.services.bots, look on the record module).

A new record kind: a module here with its key layout in its docstring and in the table below, its
Protocol, and its public names re-exported below.

Key layout (PK / SK):
  USER#<u> / PROFILE                     user, with connection_count (the 200-limit is enforced here)
  APIKEY#<sha256(key)> / APIKEY          api key -> user (GSI1: USER#<u>#APIKEYS / key_id)
  USER#<u> / CONN#<provider>#<account>   connection record (no token material)
  SUB#<subscription id> / SUB            subscription -> user/account, clientState hash, expiry
                                         (GSI2, sparse and sharded: SUBEXP#<shard> / <expiry>#<id>)
  USER#<u> / EVENT#<event id>            event (GSI1: USER#<u>#EVENTS / <start>#<id> for time ranges;
                                         GSI3, occurrences only: SERIES#<u>#<series id> / <start>#<id>).
                                         The id starts with its account's prefix (calbot.ids): one
                                         account's events are the range EVENT#evt_<account prefix>
                                         (filtered on the account: prefixes may collide), no index
  USER#<u> / SYNC#<provider>#<account>#<calendar>   delta link / sync token and its window
  USER#<u> / BOT#<bot id>                scheduled bot (GSI1: USER#<u>#BOTS / <join time>#<id>). The id
                                         starts with its series' prefix (calbot.ids): one series' bots
                                         are the range BOT#sb_<series prefix> (filtered on series_key)
  DEDUP#<u>#<meeting key> / DEDUP        one live bot per (user, meeting URL, occurrence start)
  USER#<u> / SETTINGS#AUTO               auto-schedule settings (GSI3, sparse and sharded while enabled:
                                         AUTOSCHED#<shard> / <user id>; the midnight job never scans)
  LOCK#<name> / LOCK                     short-lived mutex with a TTL
  USER#<u> / CRED#<provider>/<account>   KMS-envelope-encrypted OAuth secrets (`dynamodb` credential
                                         backend only; store/secrets.py)
  USER#<u> / TOKEN#<provider>/<account>  the shared, encrypted access-token cache; TTL `ttl`
  USER#<u> / WEBHOOK#<webhook id>        customer webhook endpoint (no secret); the user's PROFILE
                                         holds webhook_count (the 10-limit is enforced there)
  USER#<u> / WHSEC#<webhook id>          KMS-envelope-encrypted webhook signing secrets (`dynamodb`
                                         credential backend only; calbot.webhook_secrets)
  RATE#<key_id> / WINDOW#<window start epoch>   per-API-key request counters of one fixed window:
                                         n (whole window) and s<second> (each second of it); TTL
                                         `ttl` a few minutes after the window ends (calbot.ratelimit)
  USER#<u> / WHDLV#<webhook id>#<delivery id>   one customer-webhook event for one endpoint: body,
                                         attempts, state; TTL `ttl` days after it ends
                                         (store/webhook_deliveries.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calbot.store import (
    auto_settings,
    base,
    bots,
    connections,
    events,
    locks,
    rates,
    secrets,
    subscriptions,
    sync_states,
    users,
    webhook_deliveries,
    webhooks,
)
from calbot.store.auto_settings import (
    AUTO_SHARDS,
    AutoSettingsRecords,
    enabled_auto_users,
    get_auto_settings,
    put_auto_settings,
    record_auto_run,
    set_auto_rules,
    update_auto_settings,
)
from calbot.store.base import (
    BATCH_ATTEMPTS,
    WRITE_ATTEMPTS,
    Unprocessed,
    _table,
    batch_write,
    delete_keys,
    from_item,
    to_item,
    transact_write,
    user_pk,
)
from calbot.store.bots import (
    AlreadyScheduled,
    BotChanged,
    BotQueries,
    BotRecords,
    account_bots,
    bots_between,
    bots_by_join_time,
    bots_of_series,
    create_bot,
    dedup_owner,
    deferred_armings_before,
    get_bot,
    move_bot,
    save_bot,
    upcoming_bots,
)
from calbot.store.connections import (
    ConnectionExists,
    ConnectionGone,
    ConnectionLimitReached,
    ConnectionRecords,
    CounterAtZero,
    conn_sk,
    count_connections,
    create_connection,
    delete_connection,
    get_connection,
    list_connections,
    mark_disconnecting,
    mark_needs_reauth,
    record_subscriptions_stopped,
    restore_connection,
    save_connection,
    set_connection_status,
)
from calbot.store.events import (
    EventRecords,
    account_event_keys,
    count_account_events,
    event_item,
    events_of_calendar,
    events_of_series,
    get_event,
    get_events,
    put_events,
    query_events,
    series_occurrences,
    series_partition,
    set_recurring_enabled,
    write_synced_events,
)
from calbot.store.locks import (
    LockBusy,
    Locks,
    acquire_lock,
    break_lock,
    release_lock,
)
from calbot.store.rates import (
    RateCount,
    RequestCounter,
    count_request,
)
from calbot.store.secrets import (
    SecretItems,
    delete_secret,
    get_secret,
    put_secret,
)
from calbot.store.subscriptions import (
    SUB_EXPIRY_SHARDS,
    SubscriptionRecords,
    delete_subscriptions,
    get_subscription,
    get_subscriptions,
    put_subscriptions,
    subscription_ids_expiring_before,
    subscriptions_expiring_before,
)
from calbot.store.sync_states import (
    SyncConflict,
    SyncStates,
    claim_sync,
    commit_sync_state,
    delete_sync_states,
    get_sync_state,
    last_synced,
    put_sync_state,
)
from calbot.store.users import (
    UserRecords,
    delete_api_key,
    get_api_key,
    get_user,
    hash_api_key,
    list_api_keys,
    put_api_key,
    put_user,
)
from calbot.store.webhook_deliveries import (
    DeliveryRecords,
    deliveries_page,
    get_delivery,
    put_delivery,
    save_delivery,
)
from calbot.store.webhooks import (
    WebhookLimitReached,
    WebhookRecords,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhooks,
    mark_webhook_delivery_result,
    update_webhook,
)

if TYPE_CHECKING:  # each record module is the real implementation of its interfaces (mypy checks it)
    _users_UserRecords: UserRecords = users
    _rates_RequestCounter: RequestCounter = rates
    _connections_ConnectionRecords: ConnectionRecords = connections
    _subscriptions_SubscriptionRecords: SubscriptionRecords = subscriptions
    _locks_Locks: Locks = locks
    _events_EventRecords: EventRecords = events
    _sync_states_SyncStates: SyncStates = sync_states
    _auto_settings_AutoSettingsRecords: AutoSettingsRecords = auto_settings
    _bots_BotQueries: BotQueries = bots
    _bots_BotRecords: BotRecords = bots
    _secrets_SecretItems: SecretItems = secrets
    _webhook_deliveries_DeliveryRecords: DeliveryRecords = webhook_deliveries
    _webhooks_WebhookRecords: WebhookRecords = webhooks

__all__ = [
    "DeliveryRecords",
    "deliveries_page",
    "get_delivery",
    "put_delivery",
    "save_delivery",
    "SecretItems",
    "put_secret",
    "get_secret",
    "delete_secret",
    "BotQueries",
    "AutoSettingsRecords",
    "SyncStates",
    "EventRecords",
    "Locks",
    "SubscriptionRecords",
    "ConnectionRecords",
    "RequestCounter",
    "UserRecords",
    "_table",
    "to_item",
    "from_item",
    "WRITE_ATTEMPTS",
    "BATCH_ATTEMPTS",
    "batch_write",
    "Unprocessed",
    "user_pk",
    "transact_write",
    "delete_keys",
    "put_user",
    "get_user",
    "hash_api_key",
    "put_api_key",
    "get_api_key",
    "list_api_keys",
    "delete_api_key",
    "RateCount",
    "count_request",
    "ConnectionExists",
    "ConnectionLimitReached",
    "conn_sk",
    "get_connection",
    "list_connections",
    "create_connection",
    "save_connection",
    "ConnectionGone",
    "CounterAtZero",
    "mark_disconnecting",
    "record_subscriptions_stopped",
    "delete_connection",
    "count_connections",
    "set_connection_status",
    "restore_connection",
    "mark_needs_reauth",
    "last_synced",
    "SUB_EXPIRY_SHARDS",
    "put_subscriptions",
    "delete_subscriptions",
    "get_subscription",
    "get_subscriptions",
    "subscriptions_expiring_before",
    "subscription_ids_expiring_before",
    "LockBusy",
    "acquire_lock",
    "break_lock",
    "release_lock",
    "series_partition",
    "event_item",
    "series_occurrences",
    "put_events",
    "get_event",
    "get_events",
    "events_of_calendar",
    "query_events",
    "count_account_events",
    "account_event_keys",
    "write_synced_events",
    "set_recurring_enabled",
    "events_of_series",
    "delete_sync_states",
    "SyncConflict",
    "get_sync_state",
    "put_sync_state",
    "claim_sync",
    "commit_sync_state",
    "AlreadyScheduled",
    "BotRecords",
    "BotChanged",
    "dedup_owner",
    "create_bot",
    "get_bot",
    "deferred_armings_before",
    "save_bot",
    "upcoming_bots",
    "bots_by_join_time",
    "account_bots",
    "bots_between",
    "bots_of_series",
    "move_bot",
    "AUTO_SHARDS",
    "put_auto_settings",
    "update_auto_settings",
    "record_auto_run",
    "set_auto_rules",
    "get_auto_settings",
    "enabled_auto_users",
    "base",
    "users",
    "rates",
    "connections",
    "subscriptions",
    "locks",
    "events",
    "sync_states",
    "bots",
    "auto_settings",
    "secrets",
    "webhooks",
    "WebhookLimitReached",
    "WebhookRecords",
    "create_webhook",
    "get_webhook",
    "list_webhooks",
    "update_webhook",
    "delete_webhook",
    "mark_webhook_delivery_result",
]
