"""calbot.netguard: which customer webhook URLs we send to (https, public addresses only, checked after
DNS resolution), and the one explicit way the local stack's receiver is allowed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calbot.config import reset_settings
from calbot.netguard import UnsafeUrl, check_url, is_public

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver(*addresses: str) -> Any:
    """A getaddrinfo that answers every name with these addresses, and records what it was asked."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        resolve.asked.append((host, port))  # type: ignore[attr-defined]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    resolve.asked = []  # type: ignore[attr-defined]
    return resolve


def no_dns(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("an address literal must not be resolved")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("SSM_PREFIX", "/calbot/test")
    monkeypatch.delenv("WEBHOOK_ALLOWED_TEST_ORIGINS", raising=False)
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


@pytest.fixture
def origins(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def allow(value: str) -> None:
        monkeypatch.setenv("WEBHOOK_ALLOWED_TEST_ORIGINS", value)
        reset_settings()

    yield allow
    monkeypatch.delenv("WEBHOOK_ALLOWED_TEST_ORIGINS", raising=False)
    reset_settings()


def test_a_public_https_url_is_accepted_with_the_addresses_it_resolves_to() -> None:
    resolve = resolver(PUBLIC_V4, PUBLIC_V6)
    assert check_url("https://hooks.example.com/calbot?x=1", resolve=resolve) == [PUBLIC_V4, PUBLIC_V6]
    assert resolve.asked == [("hooks.example.com", 443)]
    assert check_url("https://hooks.example.com:8443/h", resolve=resolver(PUBLIC_V4)) == [PUBLIC_V4]
    assert check_url(f"https://{PUBLIC_V4}/h", resolve=no_dns) == [PUBLIC_V4]
    assert check_url(f"https://[{PUBLIC_V6}]/h", resolve=no_dns) == [PUBLIC_V6]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.5",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.10",
        "169.254.169.254",  # the EC2 / ECS metadata service
        "169.254.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd00:ec2::254",  # EC2's IPv6 metadata service
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped IPv6
        "::ffff:169.254.169.254",
        "::ffff:10.1.2.3",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
def test_a_host_that_is_or_resolves_to_a_non_public_address_is_refused(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeUrl, match="public addresses"):
        check_url(f"https://{literal}/hook", resolve=no_dns)
    with pytest.raises(UnsafeUrl, match="resolves to"):
        check_url("https://innocent.example.com/hook", resolve=resolver(address))


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    # A name answering with several addresses: the sender may connect to any, so every one must pass.
    with pytest.raises(UnsafeUrl):
        check_url("https://mixed.example.com/", resolve=resolver(PUBLIC_V4, "10.0.0.1"))


def test_dns_names_and_odd_spellings_of_private_addresses_are_judged_after_resolution() -> None:
    # What the system resolver makes of these (decimal and octal IPv4, localhost) is what is checked.
    for host in ("localhost", "2130706433", "0177.0.0.1", "127.1"):
        with pytest.raises(UnsafeUrl):
            check_url(f"https://{host}/hook")


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://hooks.example.com/h", "https"),
        ("HTTP://hooks.example.com/h", "https"),
        ("ftp://hooks.example.com/h", "https"),
        ("https://user:pass@hooks.example.com/h", "user name or password"),
        ("https://user@hooks.example.com/h", "user name or password"),
        ("https://hooks.example.com@10.0.0.1/h", "user name or password"),
        ("https:///nohost", "no host"),
        ("not a url", "https"),
        ("https://hooks.example.com:99999/", "not valid"),
    ],
)
def test_a_url_that_is_not_plain_https_is_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeUrl, match=why):
        check_url(url, resolve=resolver(PUBLIC_V4))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_url("https://nowhere.invalid/", resolve=fail)
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_url("https://empty.example.com/", resolve=resolver())


def test_a_lookup_that_hangs_is_a_refusal_not_a_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from calbot import netguard

    release = threading.Event()

    def hang(*args: Any, **kwargs: Any) -> Any:
        release.wait(5)
        return resolver(PUBLIC_V4)(*args, **kwargs)

    monkeypatch.setattr(netguard, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    try:
        with pytest.raises(UnsafeUrl, match="did not resolve within"):
            check_url("https://slow.example.com/", resolve=hang)
    finally:
        release.set()


def test_the_refusal_never_names_the_resolved_address() -> None:
    with pytest.raises(UnsafeUrl) as err:
        check_url("https://innocent.example.com/", resolve=resolver("10.9.8.7"))
    assert "10.9.8.7" not in err.value.message


def test_the_local_origin_setting_allows_exactly_its_origins(origins: Any) -> None:
    with pytest.raises(UnsafeUrl):  # nothing is allowed by default
        check_url("http://127.0.0.1:8123/hook", resolve=no_dns)
    origins("http://127.0.0.1:8123, http://127.0.0.1:9000/")
    assert check_url("http://127.0.0.1:8123/hook", resolve=no_dns) == ["127.0.0.1"]
    assert check_url("http://127.0.0.1:9000/", resolve=no_dns) == ["127.0.0.1"]
    for other in (
        "http://127.0.0.1:8124/hook",  # another port
        "http://127.0.0.1/hook",  # no port
        "https://127.0.0.1:8123/hook",  # another scheme
        "http://127.0.0.2:8123/hook",  # another host
        "http://10.0.0.1:8123/hook",
        "http://u:p@127.0.0.1:8123/hook",  # userinfo is never allowed
    ):
        with pytest.raises(UnsafeUrl):
            check_url(other, resolve=no_dns)
    with pytest.raises(UnsafeUrl):  # the setting does not open a name that resolves to it
        check_url("http://evil.example.com:8123/", resolve=resolver("127.0.0.1"))


def test_is_public() -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address(PUBLIC_V4))
    assert is_public(ipaddress.ip_address(PUBLIC_V6))
    assert not is_public(ipaddress.ip_address("::ffff:192.168.0.1"))
    assert not is_public(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not is_public(ipaddress.ip_address("fe80::1%eth0"))  # a scoped (link-local) address


def test_no_deployed_stack_allows_a_test_origin() -> None:
    from tests.unit.test_deployment import environment
    from tests.unit.test_deployment import template as deployed

    for env in ("dev", "prod"):
        assert "WebhookAllowedTestOrigins" not in environment(env)[1]
        variables = deployed(env=env).functions["CreateWebhookFunction"].environment
        assert variables["WEBHOOK_ALLOWED_TEST_ORIGINS"] == ""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(),
        st.builds(lambda host, rest: f"https://{host}{rest}", st.text(), st.text()),
        st.builds(lambda host: f"http://{host}:8123/", st.text(min_size=1)),
    )
)
def test_any_text_is_an_address_list_or_an_unsafe_url_never_an_error(url: str) -> None:
    # Whatever a user sends (after the model's length and UTF-8 checks), the answer is a 400, never a 500.
    try:
        addresses = check_url(url, resolve=resolver("10.0.0.1"))
    except UnsafeUrl as err:
        assert err.message
    else:  # names all resolve privately here: only a public address literal can pass
        import ipaddress

        assert addresses and all(is_public(ipaddress.ip_address(a)) for a in addresses), url
