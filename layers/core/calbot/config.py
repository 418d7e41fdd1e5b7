"""Settings parsed from the environment once per cold start: the one place the core reads os.environ.

The same code runs deployed and locally: only these values differ. AWS endpoints come from boto3's own
`AWS_ENDPOINT_URL` handling, provider base URLs from the variables below. Each field is read from the
variable of its name in capitals (`table_name` from TABLE_NAME); an empty variable counts as unset. A
missing or invalid variable fails with a SettingsError naming it, never later with a KeyError.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SettingsError(RuntimeError):
    """The environment lacks a setting this function needs, or holds an invalid one."""


class Settings(BaseModel):
    # Validated from the environment by alias (TABLE_NAME); tests may still build one by field name.
    model_config = ConfigDict(alias_generator=str.upper, validate_by_alias=True, validate_by_name=True)

    stage: str = "dev"
    table_name: str
    ssm_prefix: str = Field(pattern=r"^/[A-Za-z0-9_.\-/]+$")
    schedule_group: str = ""
    public_base_url: str = ""
    bot_api_url: str = ""
    connection_limit: int = Field(default=200, ge=1)
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    ms_login_base_url: str = "https://login.microsoftonline.com"
    google_oauth_base_url: str = "https://oauth2.googleapis.com"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    google_calendar_base_url: str = "https://www.googleapis.com/calendar/v3"
    # Google watch channels live 7 days by default; ask for 30 (the cap) and keep the expiry Google returns.
    google_channel_ttl_seconds: int = Field(default=2592000, ge=3600)
    # Graph allows 10,080 minutes for Outlook event subscriptions; ask a little less so clock skew
    # between us and Graph never makes the request exceed the maximum.
    subscription_lifetime_minutes: int = Field(default=10070, ge=45)
    http_timeout_seconds: float = 10.0
    # Longest Retry-After we are willing to sleep inside one Lambda invocation.
    max_retry_after_seconds: float = 20.0
    bot_launcher_arn: str = ""
    reschedule_arn: str = ""
    scheduler_role_arn: str = ""
    schedule_dlq_arn: str = ""
    # The delayed launch queue (calbot.scheduler): every function that arms a launch sends to it.
    launch_queue_url: str = ""
    bot_api_key_param: str = ""
    # Where long-lived OAuth secrets live (calbot.vault): SSM SecureStrings, or KMS-envelope-encrypted
    # DynamoDB items past SSM's parameter and throughput ceilings. The KMS key also encrypts the
    # shared access-token cache (calbot.tokencache), whichever backend holds the secrets.
    credential_backend: Literal["ssm", "dynamodb"] = "ssm"
    credential_key_arn: str = ""
    # Per API key (calbot.ratelimit): requests in one fixed minute, 0 turning limiting off, and the most
    # of them in any one second of it, so a key cannot spend its whole minute in a single burst.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Only the functions that send to these queues have them (template.yaml); see `require`.
    sync_queue_url: str = ""
    auto_schedule_queue_url: str = ""
    renewal_queue_url: str = ""
    # Customer-webhook deliveries (calbot.services.webhook_delivery): every function that emits events
    # sends to the queue; only the delivery worker has the dead-letter queue.
    webhook_queue_url: str = ""
    webhook_dlq_url: str = ""
    # Customer webhooks (calbot.netguard): exact origins (`http://<host>:<port>`, comma-separated) a
    # webhook may target although they are not public https: the local stack's receiver sink only.
    # Empty by default and in template.yaml: a deployed stack sends only to public https URLs.
    webhook_allowed_test_origins: str = ""

    def require(self, field: str) -> str:
        """A setting only some functions have: its value, or a SettingsError naming the variable."""
        value = getattr(self, field)
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{field.upper()} is not set in this function's environment")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    names = [str(field.alias) for field in Settings.model_fields.values()]
    values = {name: os.environ[name] for name in names if os.environ.get(name, "") != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None


def _describe(err: ValidationError) -> str:
    """Which variables are wrong and why, without echoing their values."""
    problems = []
    for error in err.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            problems.append(f"{name} is required but not set")
        else:
            problems.append(f"{name}: {error['msg']}")
    return "invalid settings in the environment: " + "; ".join(problems)


def reset_settings() -> None:
    """Forget the cached settings (tests that change the environment)."""
    get_settings.cache_clear()
