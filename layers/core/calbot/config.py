"""Settings parsed from the environment once per cold start.

The same code runs deployed and locally: only these values differ. AWS endpoints come from boto3's own
`AWS_ENDPOINT_URL` handling, provider base URLs from the variables below.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
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
    bot_api_key_param: str = ""
    # Per API key (calbot.ratelimit): requests in one fixed minute, 0 turning limiting off, and the most
    # of them in any one second of it, so a key cannot spend its whole minute in a single burst.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)


ENV_NAMES = {
    "stage": "STAGE",
    "table_name": "TABLE_NAME",
    "ssm_prefix": "SSM_PREFIX",
    "schedule_group": "SCHEDULE_GROUP",
    "public_base_url": "PUBLIC_BASE_URL",
    "bot_api_url": "BOT_API_URL",
    "connection_limit": "CONNECTION_LIMIT",
    "graph_base_url": "GRAPH_BASE_URL",
    "ms_login_base_url": "MS_LOGIN_BASE_URL",
    "google_oauth_base_url": "GOOGLE_OAUTH_BASE_URL",
    "google_userinfo_url": "GOOGLE_USERINFO_URL",
    "google_calendar_base_url": "GOOGLE_CALENDAR_BASE_URL",
    "google_channel_ttl_seconds": "GOOGLE_CHANNEL_TTL_SECONDS",
    "subscription_lifetime_minutes": "SUBSCRIPTION_LIFETIME_MINUTES",
    "http_timeout_seconds": "HTTP_TIMEOUT_SECONDS",
    "max_retry_after_seconds": "MAX_RETRY_AFTER_SECONDS",
    "bot_launcher_arn": "BOT_LAUNCHER_ARN",
    "reschedule_arn": "RESCHEDULE_ARN",
    "scheduler_role_arn": "SCHEDULER_ROLE_ARN",
    "schedule_dlq_arn": "SCHEDULE_DLQ_ARN",
    "bot_api_key_param": "BOT_API_KEY_PARAM",
    "rate_limit_per_minute": "RATE_LIMIT_PER_MINUTE",
    "rate_limit_burst": "RATE_LIMIT_BURST",
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    values = {field: os.environ[env] for field, env in ENV_NAMES.items() if os.environ.get(env, "") != ""}
    return Settings.model_validate(values)


def reset_settings() -> None:
    """Forget the cached settings (tests that change the environment)."""
    get_settings.cache_clear()
