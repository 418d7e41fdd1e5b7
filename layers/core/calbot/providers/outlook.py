"""Microsoft identity platform + Microsoft Graph v1.0 (Outlook calendars)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import requests

from calbot.config import Settings, get_settings
from calbot.models import CalendarInfo, Credentials
from calbot.providers.base import (
    AccountProfile,
    CalendarProvider,
    ProviderAuthError,
    ProviderRequestError,
    ProviderSubscription,
    ProviderUnavailable,
    TokenSet,
)
from calbot.providers.http import ProviderHttp
from calbot.timeutil import iso_z, now, parse_iso

SCOPES = "offline_access User.Read Calendars.Read"
_AADSTS = re.compile(r"(AADSTS\d+):\s*([^\r\n.]*)")


def _safe_description(body: dict[str, Any]) -> tuple[str | None, str]:
    """The AADSTS code and its first sentence: enough to act on, nothing secret, no trace ids."""
    match = _AADSTS.search(str(body.get("error_description") or ""))
    if match:
        return match.group(1), f"{match.group(1)}: {match.group(2).strip()}"
    return None, str(body.get("error") or "unknown error")


class OutlookProvider(CalendarProvider):
    name = "outlook"
    display_name = "Microsoft"
    scopes = SCOPES

    def __init__(self, settings: Settings | None = None, http: ProviderHttp | None = None) -> None:
        self.settings = settings or get_settings()
        self.http = http or ProviderHttp(
            timeout=self.settings.http_timeout_seconds, max_retry_after=self.settings.max_retry_after_seconds
        )
        self.graph = self.settings.graph_base_url.rstrip("/")

    # ---------------------------------------------------------------------------------------------
    # identity

    def refresh(self, creds: Credentials) -> TokenSet:
        url = (
            f"{self.settings.ms_login_base_url.rstrip('/')}/{quote(creds.tenant, safe='')}/oauth2/v2.0/token"
        )
        resp = self.http.request(
            "POST",
            url,
            data={
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "grant_type": "refresh_token",
                "refresh_token": creds.refresh_token,
                "scope": creds.scopes or SCOPES,
            },
        )
        body = _json(resp)
        if resp.status_code == 200 and body.get("access_token"):
            return TokenSet(
                access_token=body["access_token"],
                refresh_token=body.get("refresh_token"),
                expires_at=now() + timedelta(seconds=int(body.get("expires_in", 3600))),
                scope=body.get("scope", creds.scopes),
            )
        if resp.status_code in (400, 401):
            error = str(body.get("error") or "")
            code, detail = _safe_description(body)
            if error == "invalid_client":
                raise ProviderAuthError(
                    f"Microsoft rejected the client id or client secret ({detail}).",
                    kind="invalid_client",
                    code=code,
                )
            if error == "invalid_grant":
                raise ProviderAuthError(
                    f"Microsoft rejected the refresh token ({detail}).", kind="invalid_grant", code=code
                )
            raise ProviderAuthError(
                f"Microsoft refused the token request ({error or detail}).",
                kind=error or "invalid_request",
                code=code,
            )
        raise ProviderUnavailable(
            f"Microsoft's token endpoint answered {resp.status_code}.", status=resp.status_code
        )

    # ---------------------------------------------------------------------------------------------
    # graph

    def _call(
        self, method: str, url: str, token: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> requests.Response:
        if not url.startswith(self.graph + "/"):
            # nextLinks are followed only on our Graph host: a token never goes anywhere else
            raise ProviderRequestError("Refusing to follow a link outside Microsoft Graph.", status=400)
        resp = self.http.request(
            method,
            url,
            json=json,
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        if resp.status_code < 400:
            return resp
        err = _json(resp).get("error") or {}
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        if resp.status_code == 401:
            raise ProviderAuthError(
                "Microsoft Graph refused the access token.", kind="unauthorized", code=code
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ProviderUnavailable(
                f"Microsoft Graph answered {resp.status_code} ({code or 'no code'}).", status=resp.status_code
            )
        raise ProviderRequestError(
            f"Microsoft Graph answered {resp.status_code}: {code or ''} {message or ''}".strip(),
            status=resp.status_code,
            code=code,
        )

    def profile(self, access_token: str) -> AccountProfile:
        body = _json(
            self._call(
                "GET",
                f"{self.graph}/me",
                access_token,
                params={"$select": "id,displayName,mail,userPrincipalName"},
            )
        )
        # Personal accounts often have mail: null; userPrincipalName is then the address.
        account = body.get("mail") or body.get("userPrincipalName")
        if not account:
            raise ProviderRequestError("Microsoft Graph returned no email for this account.", status=502)
        return AccountProfile(
            account_id=account,
            email=account,
            name=body.get("displayName"),
            provider_user_id=str(body.get("id", "")),
        )

    def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        url: str | None = f"{self.graph}/me/calendars"
        params: dict[str, str] | None = {"$top": "50"}
        while url:
            body = _json(self._call("GET", url, access_token, params=params))
            for cal in body.get("value", []):
                owner = cal.get("owner") or {}
                calendars.append(
                    CalendarInfo(
                        id=cal["id"],
                        name=cal.get("name") or "",
                        is_primary=bool(cal.get("isDefaultCalendar")),
                        can_edit=bool(cal.get("canEdit")),
                        owner_email=owner.get("address"),
                        color=cal.get("hexColor") or cal.get("color"),
                    )
                )
            url, params = body.get("@odata.nextLink"), None
        return calendars

    def _subscription(self, body: dict[str, Any], calendar_id: str | None = None) -> ProviderSubscription:
        resource = str(body.get("resource", ""))
        match = re.search(r"calendars/([^/]+)/events", resource)
        return ProviderSubscription(
            id=body["id"],
            calendar_id=calendar_id or (match.group(1) if match else ""),
            expires_at=parse_iso(body["expirationDateTime"]),
        )

    def _expiry(self) -> str:
        return iso_z(
            now().replace(microsecond=0) + timedelta(minutes=self.settings.subscription_lifetime_minutes)
        )

    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription:
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "resource": f"/me/calendars/{calendar_id}/events",
            "expirationDateTime": self._expiry(),
            "clientState": client_state,
        }
        resp = self._call("POST", f"{self.graph}/subscriptions", access_token, json=body)
        return self._subscription(_json(resp), calendar_id)

    def get_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        try:
            resp = self._call(
                "GET", f"{self.graph}/subscriptions/{quote(subscription_id, safe='')}", access_token
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return None
            raise
        return self._subscription(_json(resp))

    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        try:
            resp = self._call(
                "PATCH",
                f"{self.graph}/subscriptions/{quote(subscription_id, safe='')}",
                access_token,
                json={"expirationDateTime": self._expiry()},
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return None
            raise
        return self._subscription(_json(resp))

    def delete_subscription(
        self, access_token: str, subscription_id: str, *, resource_id: str | None = None
    ) -> bool:
        try:
            self._call(
                "DELETE", f"{self.graph}/subscriptions/{quote(subscription_id, safe='')}", access_token
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return False
            raise
        return True


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
