"""Browser fixtures: a headless Debian Chromium driven through its own chromedriver, and the OAuth
helper started as `python -m oauth_helper` on a free port.

The browser and driver come from the `chromium` and `chromium-driver` packages (`make test` installs
them); Selenium is given both paths so Selenium Manager never tries to download a browser. Chromium's
background services (updates, sync, field trials, QUIC) are switched off: on a machine without
internet they only retry forever and slow everything down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from local.stack import free_port
from oauth_helper.config import KEYS

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1200,900",
)
# Selenium's wait deadline: generous (a busy shared machine), never an assertion about speed.
WAIT_SECONDS = 60


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def chrome() -> Iterator[object]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = (
            f"{' and '.join(missing)} missing: `make test` installs Debian's chromium and chromium-driver "
            "(or: apt-get install -y chromium chromium-driver)"
        )
        if _in_ci():
            pytest.fail(message)  # CI must run the browser tests, not quietly skip them
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="calbot-chromium-") as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(WAIT_SECONDS)
        try:
            yield driver
        finally:
            driver.quit()


@dataclass
class HelperProcess:
    url: str  # http://localhost:<port>, the origin the redirect URIs use
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# Our settings, stripped from the inherited environment so only the test's .env file counts.
HELPER_ENV_KEYS = KEYS


@pytest.fixture
def start_helper(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], HelperProcess]]:
    """Starts `python -m oauth_helper --port <free> --env-file <tmp .env with `values`>`."""
    processes: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(values: dict[str, str]) -> HelperProcess:
        env_file = tmp_path / f"helper-{len(processes)}.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        port = free_port()
        log_path = tmp_path / f"helper-{len(processes)}.log"
        log_file = log_path.open("wb")
        logs.append(log_file)
        env = {k: v for k, v in os.environ.items() if k not in HELPER_ENV_KEYS}
        proc = subprocess.Popen(
            [sys.executable, "-m", "oauth_helper", "--port", str(port), "--env-file", str(env_file)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        processes.append(proc)
        helper = HelperProcess(url=f"http://localhost:{port}", port=port, log_path=log_path)
        _wait_until_up(proc, f"http://127.0.0.1:{port}/", helper)
        return helper

    yield start
    for proc in processes:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log_file in logs:
        log_file.close()


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, helper: HelperProcess) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the OAuth helper exited with {proc.returncode}:\n{helper.log()}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the OAuth helper did not answer on {url}:\n{helper.log()}")
