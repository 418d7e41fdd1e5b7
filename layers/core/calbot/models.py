"""Pydantic models for every stored record and every request/response shape.

Stored records are validated when read back, so a corrupted or half-written item fails loudly instead
of flowing into a response. Times are timezone-aware UTC and serialise with a trailing `Z`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from calbot.providers import registry
from calbot.timeutil import iso_z, parse_iso


def _to_utc(value: datetime) -> datetime:
    try:
        return parse_iso(value.isoformat())
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: no such instant in UTC
        raise ValueError("is out of range once converted to UTC (years 1 to 9999)") from None


# A request's date-time: converted to UTC, and at least a day inside what Python can represent, so no
# arithmetic on it (a day either way, an offset of minutes) can overflow further in.
_INPUT_RANGE = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))


def _input_to_utc(value: datetime) -> datetime:
    value = _to_utc(value)
    if not _INPUT_RANGE[0] <= value <= _INPUT_RANGE[1]:
        raise ValueError("must lie between 0001-01-02 and 9999-12-30 (UTC)")
    return value


DATE_TIME_SCHEMA = {"type": "string", "format": "date-time"}
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(iso_z, return_type=str),
    WithJsonSchema(DATE_TIME_SCHEMA),
]
InputDateTime = Annotated[
    datetime,
    AfterValidator(_input_to_utc),
    PlainSerializer(iso_z, return_type=str),
    WithJsonSchema(DATE_TIME_SCHEMA),
]
# `next` / `previous`: the absolute URL of another page of the same query (with its cursor).
PageUrl = Annotated[str, WithJsonSchema({"type": "string", "format": "uri"})]


def _utf8(limit: int) -> Any:
    """DynamoDB measures keys in UTF-8 bytes (partition key <= 2048, sort key <= 1024): an id that
    goes into a key is refused up front, with a clear 400, when it could not fit."""

    def check(value: str) -> str:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: not text DynamoDB (or JSON) can carry
            raise ValueError("is not valid Unicode text") from None
        if size > limit:
            raise ValueError(f"is longer than {limit} bytes (UTF-8)")
        return value

    return AfterValidator(check)


# Our ids (evt_..., sb_...; a series id is an event id) are ASCII and short; 128 characters leaves
# room and keeps every key they go into far below DynamoDB's limits.
MAX_ID_LENGTH = 128
OurId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), _utf8(4 * MAX_ID_LENGTH)]
# An email address: at most 320 bytes (RFC 3696 errata: 64 local + @ + 255 domain).
MAX_ACCOUNT_ID_BYTES = 320
AccountId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ACCOUNT_ID_BYTES,
        description="The account's email as the provider reports it; at most 320 bytes of UTF-8.",
    ),
    _utf8(MAX_ACCOUNT_ID_BYTES),
]
ConnectionStatus = Literal["active", "needs_reauth", "error"]


class _ProviderSchema:
    """A provider value's JSON Schema, read from the registry when the document is generated: its names
    (a request's parameter also lists and explains the aliases)."""

    def __init__(self, *, aliases: bool = False) -> None:
        self.aliases = aliases

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        names = registry.names()
        if not self.aliases:
            return {"enum": names, "type": "string"}
        extra = [a for s in registry.specs() for a in s.aliases]
        return {"type": "string", "enum": names + extra, "description": registry.alias_note()}


def _known_provider(value: str) -> str:
    if not registry.known(value):
        raise ValueError(f"provider must be one of {registry.names()}")
    return value


def normalize_provider(value: str) -> str:
    """A registered provider's name from its name or any alias (e.g. `microsoft` for `outlook`),
    case-insensitive; ValueError naming the accepted ones."""
    return registry.spec(value).name


def _provider_param(value: Any) -> Any:
    return normalize_provider(value) if isinstance(value, str) else value


# A stored or returned provider: exactly a registered provider's name.
ProviderName = Annotated[str, AfterValidator(_known_provider), _ProviderSchema()]
# A provider in a request: an alias is read as its provider (`microsoft` as `outlook`); anything else
# unknown is a 400.
ProviderParam = Annotated[
    str, BeforeValidator(_provider_param), AfterValidator(_known_provider), _ProviderSchema(aliases=True)
]


def account_key(account_id: str) -> str:
    """Account ids (emails) compare case-insensitively; this is the form used in keys."""
    return account_id.strip().lower()


class Model(BaseModel):
    # Validators are built on first use, not at import: a handler pays only for the models it touches
    # (building all of them at import measured ~80 ms of cold start).
    model_config = ConfigDict(defer_build=True)


class Strict(Model):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


# --------------------------------------------------------------------------------------------------
# Stored records


class CalendarInfo(Model):
    id: str
    name: str
    is_primary: bool = False
    can_edit: bool = False
    owner_email: str | None = None
    color: str | None = None


def _legacy_handle(data: Any) -> Any:
    """Records written before subscriptions had a handle kept Google's resource id in `resource_id`:
    it is read into the handle, so nothing stored is lost."""
    if isinstance(data, dict) and "resource_id" in data:
        data = dict(data)
        resource_id = data.pop("resource_id")
        if resource_id is not None and not data.get("handle"):
            data["handle"] = {"resource_id": resource_id}
    return data


# The provider's own data about one subscription (e.g. the resource id a Google channel is stopped by):
# opaque to everything but the provider that made it.
Handle = dict[str, str]


class SubscriptionRef(Model):
    """What a connection remembers about one provider subscription (never its secret)."""

    id: str
    calendar_id: str
    expires_at: UtcDateTime
    handle: Handle = Field(default_factory=dict)

    _legacy = model_validator(mode="before")(_legacy_handle)

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionRef:
        return cls(id=sub.id, calendar_id=sub.calendar_id, expires_at=sub.expires_at, handle=sub.handle)


class FailedCalendar(Model):
    calendar_id: str
    error: str
    message: str


class DisconnectState(Model):
    """Set on a connection the moment its disconnect starts, and kept until the record is deleted.

    While it is set the account is out of service (no sync, no notifications, no new bots), and a
    retried disconnect knows what the first attempt decided and counted.
    """

    started_at: UtcDateTime
    purge_events: bool = True
    events_total: int = 0  # the account's events when the disconnect started (sync stops there)
    subscriptions_stopped: int = 0
    warnings: list[dict[str, str]] = Field(default_factory=list)


class Connection(Model):
    user_id: str
    provider: ProviderName
    account_id: str
    user_email: str | None = None
    user_name: str | None = None
    status: ConnectionStatus = "active"
    status_reason: str | None = None
    primary_calendar_id: str | None = None
    calendars: list[CalendarInfo] = Field(default_factory=list)
    subscriptions: list[SubscriptionRef] = Field(default_factory=list)
    failed_calendars: list[FailedCalendar] = Field(default_factory=list)
    webhook_url: str
    credential_path: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    last_synced_at: UtcDateTime | None = None
    disconnect: DisconnectState | None = None

    @property
    def key(self) -> str:
        return account_key(self.account_id)

    @property
    def live(self) -> bool:
        """Connected and in service: not being disconnected."""
        return self.disconnect is None


class Subscription(Model):
    """One provider subscription (Graph) or channel (Google), keyed by its id for the webhook."""

    id: str
    user_id: str
    provider: ProviderName
    account_id: str
    calendar_id: str
    client_state_hash: str  # sha256 hex of the per-subscription secret; the secret itself is never stored
    expires_at: UtcDateTime
    created_at: UtcDateTime
    handle: Handle = Field(default_factory=dict)  # the provider's own data (see SubscriptionRef)

    _legacy = model_validator(mode="before")(_legacy_handle)


class User(Model):
    user_id: str
    email: str | None = None
    created_at: UtcDateTime
    connection_count: int = 0


class ApiKeyRecord(Model):
    key_id: str
    key_hash: str
    user_id: str
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None = None


# --------------------------------------------------------------------------------------------------
# Credentials (held only in the vault, never in DynamoDB, a response or a log line)


class Credentials(Model):
    provider: ProviderName
    client_id: str
    client_secret: str
    refresh_token: str
    tenant: str = "common"
    scopes: str = ""
    # When the stored refresh token was issued (stored), for calbot.tokens' rotation rule; None: unknown.
    refresh_token_issued_at: UtcDateTime | None = None
    access_token: str | None = None
    access_token_expires_at: UtcDateTime | None = None

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debug output
        return f"Credentials(provider={self.provider!r}, client_id={self.client_id!r}, ...)"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------------
# Requests


class _ConnectionRequestBase(Strict):
    """POST /calendar/connections: exactly one provider's fields (each provider declares its own in
    the registry), and `replace`. The fields of every registered provider are this model's fields; a
    provider registered after this module was imported is read through the registry all the same."""

    _provider: str = PrivateAttr(default="")
    _fields: registry.CredentialFields | None = PrivateAttr(default=None)
    if TYPE_CHECKING:
        replace: bool

    @model_validator(mode="wrap")
    @classmethod
    def _one_provider(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        # Fields of a provider registered later are not model fields: they are read by its own model.
        later = {
            name
            for spec in registry.specs()
            for name in spec.credentials.model_fields
            if name not in cls.model_fields
        }
        made = handler({k: v for k, v in data.items() if k not in later})
        spec, fields = registry.credentials_of(data)
        made._provider, made._fields = spec.name, fields
        return made

    @property
    def provider(self) -> str:
        return self._provider

    def credentials(self) -> dict[str, str]:
        """The chosen provider's credentials as the vault keeps them (client id, secret, token...): its
        fields as this request holds them now (a model_copy may have updated them)."""
        assert self._fields is not None
        fields = type(self._fields)
        values = self._fields.model_dump()
        values.update({k: getattr(self, k) for k in fields.model_fields if k in type(self).model_fields})
        return fields.model_construct(**values).credentials()


def _connection_request_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for spec in registry.specs()
        for name, info in spec.credentials.model_fields.items()
    }
    return {**fields, "replace": (bool, False)}


if TYPE_CHECKING:
    CreateConnectionRequest = _ConnectionRequestBase
else:
    CreateConnectionRequest = create_model(
        "CreateConnectionRequest",
        __base__=_ConnectionRequestBase,
        __module__=__name__,
        **_connection_request_fields(),
    )


class ConnectionPath(Strict):
    provider: ProviderParam
    account_id: AccountId


class EventPath(Strict):
    """{event_id} of the scheduling routes: an event's `id`, or a series' `series_id`."""

    event_id: OurId


class BotPath(Strict):
    bot_id: OurId


# --------------------------------------------------------------------------------------------------
# Responses


DISCONNECTING_REASON = (
    "disconnect_in_progress: this account is being disconnected; call "
    "DELETE /api/v1/calendar/connections/{provider}/{account_id} again to finish it."
)


class WatchSetup(Model):
    subscriptions: int
    expires_at: UtcDateTime | None
    failed_calendars: list[FailedCalendar]


class ConnectionView(Model):
    provider: ProviderName
    account_id: str
    user_email: str | None
    user_name: str | None
    status: ConnectionStatus
    status_reason: str | None
    primary_calendar_id: str | None
    calendars: list[CalendarInfo]
    watch_setup: WatchSetup
    webhook_url: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    last_synced_at: UtcDateTime | None

    @classmethod
    def of(cls, conn: Connection, synced_at: datetime | None = None) -> ConnectionView:
        """`synced_at`: when its sync states say it last synced (store.last_synced); a connection item
        written before that carries its own `last_synced_at`, and the later of the two is shown."""
        expiries = [s.expires_at for s in conn.subscriptions]
        synced = [t for t in (conn.last_synced_at, synced_at) if t is not None]
        # A disconnect that was cut off shows as an error the user can resolve (the contract's statuses
        # have no "disconnecting"): calling the disconnect again finishes it.
        disconnecting = conn.disconnect is not None
        return cls(
            provider=conn.provider,
            account_id=conn.account_id,
            user_email=conn.user_email,
            user_name=conn.user_name,
            status="error" if disconnecting else conn.status,
            status_reason=DISCONNECTING_REASON if disconnecting else conn.status_reason,
            primary_calendar_id=conn.primary_calendar_id,
            calendars=conn.calendars,
            watch_setup=WatchSetup(
                subscriptions=len(conn.subscriptions),
                expires_at=min(expiries) if expiries else None,
                failed_calendars=conn.failed_calendars,
            ),
            webhook_url=conn.webhook_url,
            created_at=conn.created_at,
            updated_at=conn.updated_at,
            last_synced_at=max(synced) if synced else None,
        )


class DisconnectQuery(Strict):
    purge_events: bool = True


class DisconnectedAccount(Model):
    provider: ProviderName
    account_id: str


class DisconnectResult(Model):
    disconnected: DisconnectedAccount
    events_deleted: int
    bots_cancelled: int
    subscriptions_stopped: int
    warnings: list[dict[str, str]]


class ConnectionCreated(ConnectionView):
    message: str


class ConnectionList(Model):
    connections: dict[ProviderName, list[ConnectionView]]
    total: int
    limit: int


# --------------------------------------------------------------------------------------------------
# Events

Platform = Literal["google_meet", "zoom", "teams", "webex", "gotomeeting", "bluejeans", "whereby"]
EventType = Literal["single", "occurrence", "exception"]
ResponseStatus = Literal["organizer", "accepted", "tentative", "declined", "none"]


class Event(Model):
    """One event or one occurrence of a series, as stored. `event_id` is ours: stable across syncs and
    unique across accounts (derived from user, provider, account and the provider's id)."""

    event_id: str
    user_id: str
    provider: ProviderName
    account_id: str
    calendar_id: str
    platform_id: str  # the provider's event id
    ical_uid: str | None = None
    title: str | None = None
    start_time: UtcDateTime
    end_time: UtcDateTime
    is_all_day: bool = False
    timezone: str | None = None  # the event's own IANA zone
    organizer_email: str | None = None
    # Attendance (auto-schedule rules): counts and domains, never the attendee list.
    organizer_name: str | None = None
    response_status: ResponseStatus = "none"  # the user's own answer on this account's copy
    is_organizer: bool = False
    attendees_count: int = 0
    attendee_domains: list[str] = Field(default_factory=list)  # lower-case, distinct, capped
    location: str | None = None
    meeting_platform: Platform | None = None
    meeting_url: str | None = None
    event_type: EventType = "single"
    is_recurring: bool = False
    recurrence_rule: str | None = None
    recurrence: dict[str, Any] | None = None  # the provider's recurrence payload (Graph pattern/range)
    series_id: str | None = None  # our id of the series (derived from the master's provider id)
    series_platform_id: str | None = None
    occurrence_start: UtcDateTime | None = None  # the occurrence's original start (series only)
    recurring_enabled: bool = False  # user-owned: sync never overwrites it
    is_deleted: bool = False
    content_hash: str = ""
    created_at: UtcDateTime
    updated_at: UtcDateTime
    raw: dict[str, Any] | None = None
    sync_version: int | None = None  # the sync-state version of the sync that last wrote it


class SyncState(Model):
    """Per (account, calendar): the delta link / sync token and the fixed window it was opened with."""

    user_id: str
    provider: ProviderName
    account_id: str
    calendar_id: str
    cursor: str | None = None  # None: claimed by a sync that has not committed a cursor yet
    window_start: UtcDateTime | None = None
    window_end: UtcDateTime | None = None
    # When the sync that wrote this state started, before it asked the provider: it read every change
    # made before then (the sync worker skips a message queued earlier: services/notifications._covered).
    updated_at: UtcDateTime | None = None
    # Bumped by every sync that writes (store.claim_sync): cursor writes are conditional on it, and
    # events carry the version that wrote them, so an older sync never overwrites a newer one's work.
    version: int = 0


class ScopeQuery(Strict):
    """provider and account_id scoping, as every list endpoint takes it: account_id needs provider."""

    provider: ProviderParam | None = None
    account_id: AccountId | None = None

    @model_validator(mode="after")
    def _account_needs_provider(self) -> ScopeQuery:
        if self.account_id and not self.provider:
            raise ValueError(f"account_id needs provider ({' or '.join(registry.names())})")
        return self


class LegacyDisconnectRequest(ScopeQuery):
    """POST/DELETE /calendar/disconnect: `{}`, `{"provider"}` or `{"provider","account_id"}`."""

    purge_events: bool = True


class EventsQuery(ScopeQuery):
    time_min: InputDateTime | None = None
    time_max: InputDateTime | None = None
    calendar_id: str | None = Field(default=None, min_length=1, max_length=1024)
    sync: bool = True
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=4096)
    include_raw: bool = False

    @model_validator(mode="after")
    def _window(self) -> EventsQuery:
        if self.time_min and self.time_max and self.time_max <= self.time_min:
            raise ValueError("time_max must be after time_min")
        return self


class BotSummary(Model):
    id: str
    status: str
    scheduled_join_time: UtcDateTime
    bot_name: str | None = None
    platform: str | None = None
    is_scheduled: bool


class Organizer(Model):
    email: str | None
    name: str | None


class EventView(Model):
    id: str
    provider: ProviderName
    account_id: str
    calendar_id: str
    platform_id: str
    ical_uid: str | None
    title: str | None
    start_time: UtcDateTime
    end_time: UtcDateTime
    is_all_day: bool
    organizer_email: str | None
    organizer: Organizer
    response_status: ResponseStatus
    attendees_count: int
    location: str | None
    meeting_platform: Platform | None
    meeting_url: str | None
    is_recurring: bool
    recurrence_rule: str | None
    series_id: str | None
    occurrence_start: UtcDateTime | None
    recurring_enabled: bool
    is_deleted: bool
    created_at: UtcDateTime
    updated_at: UtcDateTime
    bots: list[BotSummary] = Field(default_factory=list)
    raw: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, event: Event, *, include_raw: bool = False, bots: list[BotSummary] | None = None
    ) -> EventView:
        data = event.model_dump(
            exclude={
                "event_id",
                "user_id",
                "raw",
                "content_hash",
                "timezone",
                "event_type",
                "recurrence",
                "series_platform_id",
                "sync_version",
                "organizer_name",
                "is_organizer",
                "attendee_domains",
            }
        )
        return cls(
            id=event.event_id,
            **data,
            organizer=Organizer(email=event.organizer_email, name=event.organizer_name),
            bots=bots or [],
            raw=event.raw if include_raw else None,
        )


PAGE_URL_DOC = "The absolute URL of the {} page of the same query (it carries the cursor); null when none."


class EventPage(Model):
    next: PageUrl | None = Field(description=PAGE_URL_DOC.format("next"))
    previous: PageUrl | None = Field(description=PAGE_URL_DOC.format("previous"))
    has_more: bool
    results: list[EventView]
    partial_errors: dict[str, dict[str, str]] = Field(default_factory=dict)


class CalendarView(Model):
    id: str
    name: str
    is_primary: bool
    can_edit: bool
    owner_email: str | None
    provider: ProviderName
    account_id: str


class ConnectionSummary(Model):
    provider: ProviderName
    account_id: str
    status: ConnectionStatus
    calendar_count: int


class CalendarList(Model):
    calendars: list[CalendarView]
    connections: list[ConnectionSummary]
    partial_errors: dict[str, dict[str, str]] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Scheduled bots

BotStatus = Literal["Scheduled", "Launching", "Launched", "Failed", "Cancelled"]
BotSource = Literal["manual", "auto", "recurrence"]
LIVE_STATUSES = ("Scheduled", "Launching")


# What DynamoDB can store of free-form JSON (bot_config, custom_attributes): no empty object key,
# numbers of at most 38 significant digits between 1E-130 and 9.99E+125, at most 32 levels of nesting.
_MAX_NESTING = 30
_NUMBER_RANGE = (Decimal("1E-130"), Decimal("1E126"))


def _storable_json(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_NESTING:
        raise ValueError(f"is nested more than {_MAX_NESTING} levels deep")
    if isinstance(value, dict):
        if "" in value:  # DynamoDB refuses an empty attribute name at any depth
            raise ValueError("object keys must not be empty")
        for item in value.values():
            _storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("numbers must be finite")
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        low, high = _NUMBER_RANGE
        if number and not (low <= abs(number) < high) or len(number.as_tuple().digits) > 38:
            raise ValueError("numbers must have at most 38 digits and lie between 1E-130 and 1E+125")
    return value


# Free-form JSON that is stored as given (validated so that storing it can never fail).
StorableDict = Annotated[dict[str, Any], AfterValidator(_storable_json)]

# Fields of the Create Bot call that the service owns: the link is the event's (what the record shows
# and the one-bot-per-meeting rule is about), and the ids are ours. A bot_config naming one is a 400.
RESERVED_BOT_CONFIG_FIELDS = ("meeting_link", "meeting_url", "calendar_event_id", "scheduled_bot_id")
RESERVED_CUSTOM_ATTRIBUTES = ("calendar_event_id", "scheduled_bot_id")


def _no_reserved(names: tuple[str, ...], where: str) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        taken = [k for k in names if k in value]
        if taken:
            raise ValueError(
                f"{', '.join(taken)} cannot be set in {where}: the service sets "
                f"{'it' if len(taken) == 1 else 'them'} (the event's meeting link, our ids)"
            )
        return value

    return AfterValidator(check)


def _reserved_schema(names: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"propertyNames": {"not": {"enum": list(names)}}, "description": description}


CUSTOM_ATTRIBUTES_DOC = (
    "Free-form JSON passed to the Create Bot API. `calendar_event_id` and `scheduled_bot_id` are "
    "set by the service and cannot be given (400)."
)
CustomAttributes = Annotated[
    dict[str, Any],
    AfterValidator(_storable_json),
    _no_reserved(RESERVED_CUSTOM_ATTRIBUTES, "custom_attributes"),
    WithJsonSchema({"type": "object", **_reserved_schema(RESERVED_CUSTOM_ATTRIBUTES, CUSTOM_ATTRIBUTES_DOC)}),
]


class BotConfig(Model):
    """The Create Bot API fields we know, validated; any other Create Bot field passes through, except
    the ones the service owns: `meeting_link` and `meeting_url` (the bot joins the event's own link,
    the one the record shows) and `calendar_event_id` / `scheduled_bot_id` (our ids, also inside
    `custom_attributes`) are refused with a 400."""

    model_config = ConfigDict(
        extra="allow",
        defer_build=True,
        json_schema_extra={"propertyNames": {"not": {"enum": list(RESERVED_BOT_CONFIG_FIELDS)}}},
    )

    bot_name: str | None = Field(default=None, min_length=1, max_length=100)
    audio_required: bool | None = None
    video_required: bool | None = None
    bot_message: str | None = Field(default=None, max_length=2000)
    transcription: Any = None
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    custom_attributes: CustomAttributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _size(self) -> BotConfig:
        taken = [k for k in RESERVED_BOT_CONFIG_FIELDS if k in (self.model_extra or {})]
        if taken:
            raise ValueError(
                f"{', '.join(taken)} cannot be set in bot_config: the service sets "
                f"{'it' if len(taken) == 1 else 'them'} (the bot joins the event's own meeting link; "
                "the ids are ours)"
            )
        import json

        if len(json.dumps(self.model_dump(mode="json"), default=str)) > 16_384:
            raise ValueError("bot_config is larger than 16 KB")
        _storable_json(self.model_dump())  # the pass-through fields too (NaN included)
        return self


class ScheduledBot(Model):
    bot_id: str
    user_id: str
    event_id: str
    series_key: str  # series_id for a recurring event, else the event id: groups a series' bots
    provider: ProviderName
    account_id: str
    title: str | None = None
    meeting_url: str
    meeting_platform: Platform | None = None
    occurrence_start: UtcDateTime
    meeting_end: UtcDateTime
    scheduled_join_time: UtcDateTime
    join_offset_seconds: int = 60
    status: BotStatus = "Scheduled"
    reason: str | None = None
    bot_config: dict[str, Any] = Field(default_factory=dict)
    source: BotSource = "manual"
    recurring_event: bool = False
    dedup_key: str
    remote_bot_id: str | None = None
    launch_attempts: int = 0
    launch_claim: str | None = None
    # Which arming of its launch is current (calbot.scheduler): every re-arm (move, new join time,
    # retry) takes the next one, under a new schedule name; a message or schedule of an older one is
    # stale and dropped. 0 for records made before it existed (their schedule is `launch-<bot id>`).
    launch_generation: int = Field(default=0, ge=0)
    # Joining beyond calbot.scheduler.ARM_WITHIN: not armed yet; the arming job arms it (while Scheduled,
    # it is in the sparse arming index).
    arm_deferred: bool = False
    created_at: UtcDateTime
    updated_at: UtcDateTime
    launched_at: UtcDateTime | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


class ScheduleRequest(Strict):
    bot_config: BotConfig = Field(default_factory=BotConfig)
    recurring_event: bool = False
    schedule_all_occurrences: bool = False
    occurrence_limit: int = Field(default=52, ge=1, le=366)
    occurrence_date: InputDateTime | None = None
    join_offset_seconds: int = Field(default=60, ge=0, le=3600)

    @field_validator("occurrence_date", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        # "2026-04-14" means that day: matched against the occurrence's date, so midnight UTC here
        if isinstance(value, str) and len(value.strip()) == 10:
            return value.strip() + "T00:00:00Z"
        return value


class UnscheduleRequest(Strict):
    cancel_all_occurrences: bool = False
    from_date: InputDateTime | None = None


# The guide's spelling, kept for existing clients: documented as a deprecated alias (a JSON Schema
# annotation only; pydantic's own `deprecated=` would also warn on every attribute read).
SCHEDULED_JOIN_TIME_ALIAS: Any = Field(
    description="Deprecated alias of `scheduled_join_time` (the product guide's spelling): always the "
    "same value. Read `scheduled_join_time` instead.",
    json_schema_extra={"deprecated": True},
)


class BotRef(Model):
    bot_id: str
    occurrence_start: UtcDateTime
    scheduled_join_time: UtcDateTime


class ScheduleResult(Model):
    bot_id: str
    event_id: str
    status: BotStatus
    scheduled_join_time: UtcDateTime
    ScheduledJoinTime: UtcDateTime = SCHEDULED_JOIN_TIME_ALIAS
    meeting_url: str
    meeting_platform: Platform | None
    recurring_event: bool
    bots: list[BotRef]


class BotView(Model):
    bot_id: str
    event_id: str
    provider: ProviderName
    account_id: str
    title: str | None
    meeting_url: str
    meeting_platform: Platform | None
    occurrence_start: UtcDateTime
    scheduled_join_time: UtcDateTime
    ScheduledJoinTime: UtcDateTime = SCHEDULED_JOIN_TIME_ALIAS
    status: BotStatus
    reason: str | None
    bot_config: dict[str, Any]
    source: BotSource
    recurring_event: bool
    remote_bot_id: str | None

    @classmethod
    def of(cls, bot: ScheduledBot) -> BotView:
        return cls(
            bot_id=bot.bot_id,
            event_id=bot.event_id,
            provider=bot.provider,
            account_id=bot.account_id,
            title=bot.title,
            meeting_url=bot.meeting_url,
            meeting_platform=bot.meeting_platform,
            occurrence_start=bot.occurrence_start,
            scheduled_join_time=bot.scheduled_join_time,
            ScheduledJoinTime=bot.scheduled_join_time,
            status=bot.status,
            reason=bot.reason,
            bot_config=bot.bot_config,
            source=bot.source,
            recurring_event=bot.recurring_event,
            remote_bot_id=bot.remote_bot_id,
        )


class BotPage(Model):
    results: list[BotView]
    next: PageUrl | None = Field(description=PAGE_URL_DOC.format("next"))
    has_more: bool


class ScheduledBotsQuery(ScopeQuery):
    limit: int = Field(default=100, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=4096)
    status: BotStatus | Literal["all"] | None = Field(
        default=None,
        description="Absent: the live bots (Scheduled, Launching) whose join time is ahead, soonest "
        "first. One status: the bots in it whatever their join time (those ahead soonest first, then "
        "past ones newest first). `all`: every bot, in the same order.",
    )


class PatchBotRequest(Strict):
    scheduled_join_time: InputDateTime | None = None
    bot_name: str | None = Field(default=None, min_length=1, max_length=100)
    bot_username: str | None = Field(default=None, min_length=1, max_length=100)
    custom_attributes: CustomAttributes | None = None
    bot_config: BotConfig | None = None

    @model_validator(mode="after")
    def _something(self) -> PatchBotRequest:
        if not self.model_fields_set:
            raise ValueError(
                "send at least one of scheduled_join_time, bot_name, custom_attributes, bot_config"
            )
        if self.bot_name and self.bot_username and self.bot_name != self.bot_username:
            raise ValueError("bot_name and bot_username (its alias) disagree")
        if self.custom_attributes is not None:
            import json

            if len(json.dumps(self.custom_attributes, default=str)) > 16_384:
                raise ValueError("custom_attributes is larger than 16 KB")
        return self


class NothingScheduled(Model):
    """auto-reschedule's 200: the next occurrence already has a bot, or there is none."""

    scheduled: Literal[False] = False
    message: str


class ToggleRecurrenceRequest(Strict):
    event_id: OurId
    recurring_enabled: bool


class ToggleRecurrenceResult(Model):
    event_id: str
    recurring_enabled: bool
    next_occurrence: UtcDateTime | None


class AutoRescheduleRequest(Strict):
    event_id: OurId
    user_id: str | None = Field(default=None, max_length=64)
    recurrence_rule: str | None = Field(default=None, max_length=2000)


class CancelResult(Model):
    cancelled: int
    bot_ids: list[str]


class InternalInput(Model):
    """What our own schedules and queues hand a function (not an HTTP request: no client sends it)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ScheduleInput(InternalInput):
    """The Input of our one-time schedules, as EventBridge Scheduler delivers it to the target. A
    launch schedule names the join time and generation it was armed for (absent in schedules made
    before they were carried: those stand for whatever the bot's record says)."""

    action: Literal["launch", "reschedule"]
    user_id: str = Field(min_length=1, max_length=64)
    bot_id: str = Field(min_length=1, max_length=64)
    join_time: UtcDateTime | None = None
    generation: int | None = Field(default=None, ge=0)


class LaunchMessage(InternalInput):
    """A message of the delayed launch queue: launch this bot at `launch_at` (SQS's DelaySeconds made it
    visible then), if it is still Scheduled for `join_time` under `generation`."""

    user_id: str = Field(min_length=1, max_length=64)
    bot_id: str = Field(min_length=1, max_length=64)
    join_time: UtcDateTime
    generation: int = Field(ge=0)
    launch_at: UtcDateTime


# --------------------------------------------------------------------------------------------------
# Auto-scheduling


class LastRun(Model):
    scheduled: int = 0
    skipped_existing: int = 0
    skipped_no_link: int = 0
    skipped_cancelled: int = 0
    skipped_started: int = 0
    skipped_rules: int = 0  # meetings the user's rules leave out (calbot.rules)
    partial_errors: dict[str, dict[str, str]] = Field(default_factory=dict)


MeetingsRule = Literal["all", "organized_by_me", "external", "internal"]
RULE_LIST_LIMIT = 50  # title substrings, platforms or accounts in one rule
RULE_TEXT_LIMIT = 200  # one title substring


class RuleAccount(Strict):
    provider: ProviderParam
    account_id: AccountId


RuleText = Annotated[str, Field(min_length=1, max_length=RULE_TEXT_LIMIT)]


class AutoScheduleRules(Strict):
    """Which meetings get an automatic bot (API.md "Auto-schedule rules"); every field optional."""

    meetings: MeetingsRule = "all"
    platforms: list[Platform] | None = Field(default=None, max_length=RULE_LIST_LIMIT)
    skip_declined: StrictBool = True
    skip_tentative: StrictBool = False
    skip_all_day: StrictBool = True
    skip_without_attendees: StrictBool = False
    title_include: list[RuleText] = Field(default_factory=list, max_length=RULE_LIST_LIMIT)
    title_exclude: list[RuleText] = Field(default_factory=list, max_length=RULE_LIST_LIMIT)
    min_duration_minutes: StrictInt | None = Field(default=None, ge=0, le=10_080)
    max_duration_minutes: StrictInt | None = Field(default=None, ge=1, le=10_080)
    accounts: list[RuleAccount] | None = Field(default=None, max_length=RULE_LIST_LIMIT)

    @model_validator(mode="after")
    def _durations(self) -> AutoScheduleRules:
        low, high = self.min_duration_minutes, self.max_duration_minutes
        if low is not None and high is not None and high < low:
            raise ValueError("max_duration_minutes must not be below min_duration_minutes")
        return self


class AutoScheduleSettings(Model):
    user_id: str
    enabled: bool = False
    default_bot_config: dict[str, Any] = Field(default_factory=dict)
    join_offset_seconds: int = 60
    rules: AutoScheduleRules = Field(default_factory=AutoScheduleRules)
    updated_at: UtcDateTime
    last_run_at: UtcDateTime | None = None
    last_run: LastRun | None = None


class AutoScheduleSettingsView(Model):
    enabled: bool
    default_bot_config: dict[str, Any]
    join_offset_seconds: int
    rules: AutoScheduleRules
    updated_at: UtcDateTime | None
    last_run_at: UtcDateTime | None
    last_run: LastRun | None

    @classmethod
    def of(cls, settings: AutoScheduleSettings | None) -> AutoScheduleSettingsView:
        if settings is None:
            return cls(
                enabled=False,
                default_bot_config={},
                join_offset_seconds=60,
                rules=AutoScheduleRules(),
                updated_at=None,
                last_run_at=None,
                last_run=None,
            )
        return cls(
            enabled=settings.enabled,
            default_bot_config=settings.default_bot_config,
            join_offset_seconds=settings.join_offset_seconds,
            rules=settings.rules,
            updated_at=settings.updated_at,
            last_run_at=settings.last_run_at,
            last_run=settings.last_run,
        )


class EnableAutoScheduleRequest(Strict):
    default_bot_config: BotConfig = Field(default_factory=BotConfig)
    join_offset_seconds: int = Field(default=60, ge=0, le=3600)
    rules: AutoScheduleRules | None = None  # None: the stored rules stay


class PreviewQuery(Strict):
    hours: int = Field(default=24, ge=1, le=168)


class PreviewItem(Model):
    event_id: str
    title: str | None
    start_time: UtcDateTime
    provider: ProviderName
    account_id: str
    would_schedule: bool
    reason: str = Field(
        description="Why: `matched` (it gets a bot), `has_bot` (a live bot exists), or the first rule "
        "that leaves it out: `no_link`, `declined`, `tentative`, `all_day`, `not_organizer`, "
        "`internal`, `external`, `platform`, `title`, `duration`, `account`, `no_attendees`, "
        "`cancelled`, `started`."
    )


class PreviewResult(Model):
    results: list[PreviewItem]


class BatchedMessage(Strict):
    """A fan-out message (calbot.fanout): several items of work, from one run."""

    run_id: str = Field(min_length=1, max_length=64)

    def items(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def carrying(cls, items: list[str], run_id: str) -> Self:
        raise NotImplementedError


class AutoScheduleMessage(BatchedMessage):
    """One message of the midnight fan-out: the next 24 hours of several users (`user_ids`), or of one
    (`user_id`: a user put back alone after a failure, and the messages sent before batching)."""

    user_id: str | None = Field(default=None, min_length=1, max_length=64)
    user_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100
    )

    @model_validator(mode="after")
    def _some_user(self) -> AutoScheduleMessage:
        if not self.users():
            raise ValueError("a message names at least one user")
        return self

    def users(self) -> list[str]:
        return [*([self.user_id] if self.user_id else []), *self.user_ids]

    def items(self) -> list[str]:
        return self.users()

    @classmethod
    def carrying(cls, items: list[str], run_id: str) -> Self:
        return cls(user_ids=items, run_id=run_id)


class RenewalMessage(BatchedMessage):
    """One message of the 03:00 renewal fan-out: subscriptions / channels due for renewal."""

    subscription_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=100
    )

    def items(self) -> list[str]:
        return self.subscription_ids

    @classmethod
    def carrying(cls, items: list[str], run_id: str) -> Self:
        return cls(subscription_ids=items, run_id=run_id)


# --------------------------------------------------------------------------------------------------
# Errors and change notifications (documentation shapes for the OpenAPI document)


class ErrorDetail(Model):
    field: str
    message: str


class ErrorBody(Model):
    """Every error answer: a snake_case code and a sentence; `details` lists the bad fields of a 400
    invalid_request. Some errors add fields of their own (account_id, bot_id, limit, ...)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    error: str
    message: str
    details: list[ErrorDetail] | None = None


class ChangeNotification(Model):
    """One item of a Microsoft Graph change or lifecycle notification (other Graph fields allowed)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    subscriptionId: str | None = None
    clientState: str | None = None
    changeType: str | None = None
    resource: str | None = None
    lifecycleEvent: str | None = None


class ChangeNotifications(Model):
    """What Microsoft Graph POSTs to an account's webhook URL."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    value: list[ChangeNotification] = Field(default_factory=list)


class ChangeMessage(InternalInput):
    """One unit of work for an account, on the FIFO queue whose message group is the account (our own
    queue's message, not a request: its `sent_at` is stamped by the sender)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)

    user_id: str = Field(min_length=1, max_length=64)
    provider: ProviderName
    account_id: str = Field(min_length=1, max_length=320)
    kind: Literal["sync", "renew", "recreate"] = "sync"
    subscription_id: str | None = Field(default=None, max_length=256)
    # When it was queued (calbot.timeutil's clock, as the sync's own start): a sync of every calendar
    # of the account that started later has already read what this message reports.
    sent_at: UtcDateTime | None = None


# --------------------------------------------------------------------------------------------------
# Customer webhooks (API.md "Customer webhooks"; issue 19): the endpoints a user registers, and the
# events we send them. The delivery records and queue messages are calbot.services.webhook_delivery's.

WebhookEventType = Literal[
    "bot.scheduled",
    "bot.updated",
    "bot.cancelled",
    "bot.launched",
    "bot.failed",
    "connection.created",
    "connection.needs_reauth",
    "connection.disconnected",
    "auto_schedule.completed",
    "webhook.test",
]
WEBHOOK_EVENT_TYPES: tuple[str, ...] = get_args(WebhookEventType)
ALL_WEBHOOK_EVENTS = "*"
WEBHOOK_LIMIT = 10  # endpoints per user (API.md)
WEBHOOK_SECRET_OVERLAP_SECONDS = 24 * 3600  # a rotated-out secret still signs this long
WEBHOOK_DISABLE_AFTER_SECONDS = 5 * 24 * 3600  # failing every delivery this long disables an endpoint
WEBHOOK_URL_MAX = 2048
WEBHOOK_DESCRIPTION_MAX = 500


def _event_types(value: list[str]) -> list[str]:
    """`["*"]` (everything, also what is added later) or a list of known types, each once."""
    if ALL_WEBHOOK_EVENTS in value and len(set(value)) > 1:
        raise ValueError('"*" subscribes to every type: send it alone')
    return list(dict.fromkeys(value))


WebhookSubscription = WebhookEventType | Literal["*"]
WebhookEventTypes = Annotated[
    list[WebhookSubscription],
    Field(
        min_length=1,
        max_length=len(WEBHOOK_EVENT_TYPES),
        description='The event types the endpoint receives: `["*"]` for every type, or a list of them.',
    ),
    AfterValidator(_event_types),
]
WebhookUrlField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=WEBHOOK_URL_MAX,
        description="An https URL that resolves only to public addresses (no loopback, private, "
        "link-local or metadata address), with no user:password part.",
        json_schema_extra={"format": "uri"},
    ),
    _utf8(WEBHOOK_URL_MAX),
]
WebhookDescription = Annotated[
    str, Field(max_length=WEBHOOK_DESCRIPTION_MAX), _utf8(4 * WEBHOOK_DESCRIPTION_MAX)
]


def _every_event() -> list[WebhookSubscription]:
    return ["*"]


class WebhookEndpoint(Model):
    """A registered endpoint, as stored (USER#<u> / WEBHOOK#<id>). Its signing secrets are not here:
    calbot.webhook_secrets keeps them in the credential backend."""

    webhook_id: str
    user_id: str
    url: str
    event_types: list[str]
    description: str | None = None
    enabled: bool = True
    created_at: UtcDateTime
    updated_at: UtcDateTime
    # Since when every delivery has failed (None: the last one succeeded); 5 days of it disables it.
    failing_since: UtcDateTime | None = None
    disabled_reason: str | None = None  # "failing_5_days" when the failures disabled it
    secret_version: int = Field(default=1, ge=1)  # bumped by each rotation
    previous_secret_expires_at: UtcDateTime | None = None  # the rotated-out secret signs until then

    def subscribed(self, event_type: str) -> bool:
        return ALL_WEBHOOK_EVENTS in self.event_types or event_type in self.event_types


class WebhookPath(Strict):
    webhook_id: OurId


class CreateWebhookRequest(Strict):
    url: WebhookUrlField
    event_types: WebhookEventTypes = Field(default_factory=_every_event)
    description: WebhookDescription | None = None


class PatchWebhookRequest(Strict):
    url: WebhookUrlField | None = None
    event_types: WebhookEventTypes | None = None
    description: WebhookDescription | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> PatchWebhookRequest:
        if not self.model_fields_set:
            raise ValueError("send at least one of url, event_types, description, enabled")
        for name in ("url", "event_types", "enabled"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class WebhookView(Model):
    """An endpoint as the API shows it (never its secret)."""

    id: str
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description='Why it was disabled by us ("failing_5_days"); null when enabled or disabled by you.'
    )
    created_at: UtcDateTime
    updated_at: UtcDateTime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> Self:
        shown = set(WebhookView.model_fields) - {"id"}
        return cls.model_validate({"id": endpoint.webhook_id, **{k: getattr(endpoint, k) for k in shown}})


WEBHOOK_SECRET_DOC = (
    "The signing secret (Standard Webhooks, `whsec_` + base64): shown only in this answer. Verify "
    "each delivery's `webhook-signature` with it."
)


class WebhookCreated(WebhookView):
    secret: str = Field(description=WEBHOOK_SECRET_DOC)


class WebhookSecretRotated(Model):
    id: str
    secret: str = Field(description=WEBHOOK_SECRET_DOC)
    previous_secret_expires_at: UtcDateTime | None = Field(
        description="Until then deliveries carry a signature by the previous secret too."
    )


class WebhookList(Model):
    webhooks: list[WebhookView]
    total: int
    limit: int


class WebhookDeleted(Model):
    deleted: bool
    id: str


class WebhookEvent(Model):
    """One event, as POSTed to every subscribed endpoint (the `webhook-id` header is its `id`)."""

    id: str = Field(description="`evt_…`: the same on every retry; receivers dedupe by it.")
    type: WebhookEventType
    timestamp: UtcDateTime
    data: dict[str, Any]


class AutoScheduleCompletedData(Model):
    """`auto_schedule.completed`: one auto-schedule run for the user (the midnight job, or enabling)."""

    run_at: UtcDateTime
    scheduled: int
    skipped_existing: int
    skipped_no_link: int
    skipped_cancelled: int
    skipped_started: int
    skipped_rules: int = 0
    partial_errors: dict[str, dict[str, str]] = Field(default_factory=dict)


class WebhookTestData(Model):
    """`webhook.test`: sent by POST /webhooks/{id}/test."""

    webhook_id: str
    message: str


# What each event type's `data` is, and when it is sent (the OpenAPI document's `webhooks` section is
# built from this): the bot as GET /calendar/scheduled_bots shows it, the connection record, the run.
_WEBHOOK_EVENTS_BY_DATA: tuple[tuple[type[Model], dict[str, str]], ...] = (
    (
        BotView,
        {
            "bot.scheduled": "A bot was scheduled (by you, by auto-scheduling, or by a recurrence).",
            "bot.updated": "A scheduled bot changed: its meeting moved, or you edited it.",
            "bot.cancelled": "A bot was cancelled; `reason` says why: user_cancelled, event_cancelled, "
            "event_moved_to_past, calendar_disconnected, recurrence_disabled, rule_mismatch.",
            "bot.launched": "The Create Bot API accepted the bot; `remote_bot_id` is its id there.",
            "bot.failed": "The bot could not be launched; `reason` says why.",
        },
    ),
    (
        ConnectionView,
        {
            "connection.created": "A calendar account was connected.",
            "connection.needs_reauth": "A connection's authorization failed for good (revoked consent, "
            "expired client secret): connect it again.",
            "connection.disconnected": "A calendar account was disconnected.",
        },
    ),
    (AutoScheduleCompletedData, {"auto_schedule.completed": "An auto-schedule run finished for you."}),
    (WebhookTestData, {"webhook.test": "Sent by POST /webhooks/{webhook_id}/test."}),
)
WEBHOOK_EVENT_DATA: dict[str, tuple[type[Model], str]] = {
    event_type: (model, summary)
    for model, summaries in _WEBHOOK_EVENTS_BY_DATA
    for event_type, summary in summaries.items()
}


# --------------------------------------------------------------------------------------------------
# Customer-webhook deliveries (calbot.services.webhook_delivery; the endpoints are WebhookEndpoint)

DeliveryState = Literal["pending", "delivered", "failed"]


class DeliveryAttempt(Model):
    """One POST of a delivery: when, the receiver's status (None: no answer) and our short reason."""

    at: UtcDateTime
    status: int | None = None
    error: str | None = None


class WebhookDelivery(Model):
    """Stored: one event for one endpoint (USER#<u> / WHDLV#<webhook id>#<delivery id>)."""

    delivery_id: str
    user_id: str
    webhook_id: str
    event_id: str
    type: str
    body: str  # the exact JSON sent on every attempt (what the signature covers)
    created_at: UtcDateTime
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    last_attempt_at: UtcDateTime | None = None
    next_attempt_at: UtcDateTime | None = None
    state: DeliveryState = "pending"
    # Changes whenever an attempt is (re)scheduled: a queue message carrying another one is stale.
    token: str = ""
    history: list[DeliveryAttempt] = Field(default_factory=list)


class DeliveryView(Model):
    id: str
    event_id: str
    type: str
    attempts: int
    last_status: int | None
    last_attempt_at: UtcDateTime | None
    next_attempt_at: UtcDateTime | None
    state: DeliveryState

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryView:
        return cls(
            id=delivery.delivery_id,
            event_id=delivery.event_id,
            type=delivery.type,
            attempts=delivery.attempts,
            last_status=delivery.last_status,
            last_attempt_at=delivery.last_attempt_at,
            next_attempt_at=delivery.next_attempt_at,
            state=delivery.state,
        )


class DeliveryPage(Model):
    results: list[DeliveryView]
    next: PageUrl | None = Field(description=PAGE_URL_DOC.format("next"))
    has_more: bool


class DeliveriesQuery(Strict):
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=4096)


class DeliveryPath(Strict):
    webhook_id: OurId
    delivery_id: str = Field(min_length=1, max_length=64, pattern=r"^whd_[0-9a-z]+$")


class DeliveryMessage(InternalInput):
    """The delivery queue's message: an event to fan out to endpoints (`event`), or one attempt of one
    delivery (`attempt`, carrying the delivery's token at the time it was scheduled)."""

    kind: Literal["event", "attempt"]
    user_id: str = Field(min_length=1, max_length=64)
    webhook_ids: list[str] = Field(default_factory=list, max_length=20)
    event: dict[str, Any] | None = None
    webhook_id: str | None = Field(default=None, max_length=64)
    delivery_id: str | None = Field(default=None, max_length=64)
    token: str | None = Field(default=None, max_length=64)
