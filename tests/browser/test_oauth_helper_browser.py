"""The OAuth helper in a real headless Chromium, against the Microsoft and Google emulators.

What a user does: open the helper, click the provider's button, accept on the consent page, copy the
refresh token off the result page. The token is then proven real by refreshing it at the emulator's
token endpoint, and the curl on the page is checked to carry it. A callback with a forged or replayed
`state` must be refused without any token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local.emulators.graph import GraphEmulator
from local.servers import RunningServer, serve
from tests.browser.conftest import WAIT_SECONDS, HelperProcess

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
MICROSOFT_SCOPES = "offline_access User.Read Calendars.Read"
CALBOT_API_URL = "http://calbot.invalid/api/v1"


def wait(driver: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS)


def find(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def consent_and_read_result(driver: Any, helper: HelperProcess, provider: str) -> dict[str, str]:
    """Index -> provider button -> the emulator's consent page -> Accept -> the result page."""
    driver.get(f"{helper.url}/")
    find(driver, f"a#{provider}-login").click()
    accept = find(driver, "button[name='consent'][value='accept']")
    assert not driver.current_url.startswith(helper.url)  # we are at the provider now
    accept.click()
    token_box = find(driver, "textarea#refresh-token")
    assert token_box.get_attribute("readonly") is not None
    callback_url = driver.current_url
    assert callback_url.startswith(f"{helper.url}/api/{provider}/oauth-callback?")
    result = {
        "refresh_token": token_box.get_attribute("value"),
        "email": find(driver, "#account-email").text,
        "curl": find(driver, "pre#curl").text,
        "callback_url": callback_url,
    }
    copy = find(driver, "button#copy")
    copy.click()
    wait(driver).until(lambda d: d.find_element("css selector", "button#copy").text == "Copied")
    return result


def assert_state_refused(driver: Any, url: str) -> None:
    driver.get(url)
    error = find(driver, "#error")
    assert "state check failed" in error.text
    assert driver.find_elements("css selector", "#refresh-token") == []


def assert_refused_states(driver: Any, helper: HelperProcess, provider: str, callback_url: str) -> None:
    # Replaying the exact callback the browser just used (same code, same state): refused.
    assert_state_refused(driver, callback_url)
    # A forged state with a plausible code: refused.
    assert_state_refused(driver, f"{helper.url}/api/{provider}/oauth-callback?code=abc&state=forged-state")
    # No state at all: refused.
    assert_state_refused(driver, f"{helper.url}/api/{provider}/oauth-callback?code=abc")


def assert_no_secrets_logged(helper: HelperProcess, *secrets: str) -> None:
    log = helper.log()
    assert "oauth-callback" in log  # the access log is there, with the path only
    for secret in secrets:
        assert secret not in log


# ------------------------------------------------------------------------------------------------
# Microsoft
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def graph() -> Iterator[tuple[GraphEmulator, RunningServer]]:
    emulator = GraphEmulator()
    server = serve(emulator, name="graph-oauth-browser")
    yield emulator, server
    server.shutdown()


def test_microsoft_flow_in_chromium(
    chrome: Any,
    start_helper: Callable[[dict[str, str]], HelperProcess],
    graph: tuple[GraphEmulator, RunningServer],
) -> None:
    emulator, server = graph
    app = emulator.add_app()
    emulator.add_account(
        client_id=app["client_id"],
        user_principal_name="jane.browser@contoso.example",
        mail="jane.browser@contoso.example",
        display_name="Jane Browser",
    )
    helper = start_helper(
        {
            "MICROSOFT_CLIENT_ID": app["client_id"],
            "MICROSOFT_CLIENT_SECRET": app["client_secret"],
            "MICROSOFT_LOGIN_BASE_URL": server.url,
            "GRAPH_BASE_URL": f"{server.url}/v1.0",
            "CALBOT_API_URL": CALBOT_API_URL,
        }
    )
    # Google has no credentials in this .env: its button is disabled, with the reason.
    chrome.get(f"{helper.url}/")
    assert find(chrome, "#google-login").get_attribute("disabled") is not None
    assert "GOOGLE_CLIENT_ID" in find(chrome, "#google-disabled").text

    result = consent_and_read_result(chrome, helper, "microsoft")
    token = result["refresh_token"]
    assert token
    assert result["email"] == "jane.browser@contoso.example"
    assert token in result["curl"]
    assert f"{CALBOT_API_URL}/calendar/create_outlook_calendar" in result["curl"]
    assert '"microsoft_client_id": "' + app["client_id"] in result["curl"]

    # The token is real: the emulator's token endpoint refreshes it.
    refreshed = requests.post(
        f"{server.url}/common/oauth2/v2.0/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "scope": MICROSOFT_SCOPES,
        },
        timeout=30,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"]

    assert_refused_states(chrome, helper, "microsoft", result["callback_url"])
    code = parse_qs(urlsplit(result["callback_url"]).query)["code"][0]
    assert_no_secrets_logged(helper, token, code, app["client_secret"])


# ------------------------------------------------------------------------------------------------
# Google
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def google() -> Iterator[tuple[Any, RunningServer]]:
    from local.emulators.google import GoogleEmulator

    emulator = GoogleEmulator()
    server = serve(emulator, name="google-oauth-browser")
    yield emulator, server
    server.shutdown()


def test_google_flow_in_chromium(
    chrome: Any,
    start_helper: Callable[[dict[str, str]], HelperProcess],
    google: tuple[Any, RunningServer],
) -> None:
    emulator, server = google
    app = emulator.add_app()
    emulator.add_account("sam.browser@gmail.example", client_id=app["client_id"])
    helper = start_helper(
        {
            "GOOGLE_CLIENT_ID": app["client_id"],
            "GOOGLE_CLIENT_SECRET": app["client_secret"],
            "GOOGLE_AUTH_URL": f"{server.url}/o/oauth2/v2/auth",
            "GOOGLE_TOKEN_URL": f"{server.url}/token",
            "GOOGLE_USERINFO_URL": f"{server.url}/v1/userinfo",
            "CALBOT_API_URL": CALBOT_API_URL,
        }
    )
    # Like the console: only the registered redirect URI is accepted (now that the port is known).
    emulator.add_app(
        app["client_id"], app["client_secret"], redirect_uris=[f"{helper.url}/api/google/oauth-callback"]
    )
    chrome.get(f"{helper.url}/")
    assert find(chrome, "#microsoft-login").get_attribute("disabled") is not None

    result = consent_and_read_result(chrome, helper, "google")
    token = result["refresh_token"]
    assert token
    assert result["email"] == "sam.browser@gmail.example"
    assert token in result["curl"]
    assert '"google_client_id": "' + app["client_id"] in result["curl"]
    assert "microsoft_" not in result["curl"]

    refreshed = requests.post(
        f"{server.url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
        },
        timeout=30,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"]

    assert_refused_states(chrome, helper, "google", result["callback_url"])
    code = parse_qs(urlsplit(result["callback_url"]).query)["code"][0]
    assert_no_secrets_logged(helper, token, code, app["client_secret"])
