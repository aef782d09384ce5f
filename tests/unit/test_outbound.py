"""The outbound check (shared/outbound.py): URLs read as requests sends them, targets judged by host, port and address.

The resolver is the policy's seam: these tests give it the answers a DNS would,
so names that resolve to loopback, private or metadata addresses are tried
without a DNS server. Sending through the check is tested on real sockets in
tests/integration/test_outbound.py.
"""
from __future__ import annotations

import ipaddress
import socket

import pytest

from shared.outbound import OutboundPolicy, OutboundRefused, blocked, parse, parse_allow_list
from shared.settings import load


def resolving(table: dict[str, list[str]]):
    def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolver


PUBLIC = "93.184.215.14"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1]:8445\\@127.0.0.1/", "backslash"),
        ("http://169.254.169.254\\@127.0.0.1/latest/meta-data", "backslash"),
        ("http://user:secret@example.org/", "user name"),
        ("http://@example.org/", "user name"),
        ("http://user@127.0.0.1@example.org/", "user name"),
        ("ftp://example.org/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://127.0.0.1:25/", "http or https"),
        ("http://[::1", "http or https"),
        ("http://example.org:0/", "port 0"),
        ("http:///path", "host"),
        ("http://exa mple.org/", "white space"),
        ("http://example.org/\r\nX-Injected: 1", "white space"),
        ("", "http or https"),
    ],
)
def test_urls_that_must_never_be_requested_are_refused_by_form(url, why):
    with pytest.raises(OutboundRefused, match=why):
        parse(url)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://Example.ORG./x", "example.org", 80),
        ("https://example.org/x", "example.org", 443),
        ("http://2130706433:8445/", "127.0.0.1", 8445),
        ("http://127.1/", "127.0.0.1", 80),
        ("http://0x7f.1/", "127.0.0.1", 80),
        ("http://0177.0.0.1/", "127.0.0.1", 80),
        ("http://[::ffff:127.0.0.1]:8445/", "::ffff:7f00:1", 8445),
        ("http://[0:0:0:0:0:0:0:1]/", "::1", 80),
        ("https://bücher.example/", "xn--bcher-kva.example", 443),
    ],
)
def test_hosts_are_read_as_getaddrinfo_reads_them(url, host, port):
    target = parse(url)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "100.100.100.200",
        "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.0.192", "168.63.129.16",
        "::1", "::", "fd00:ec2::254", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
        "::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2001::1", "2001:db8::1",
    ],
)
def test_loopback_private_link_local_cgnat_metadata_and_their_ipv6_forms_are_blocked(address):
    assert blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_not_blocked(address):
    assert not blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:8445/", "http://127.0.0.1:8445/reset", "http://[::ffff:127.0.0.1]:8445/", "http://2130706433:8445/",
        "http://127.1:8445/", "http://0x7f.1:8445/", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
        "http://10.0.0.5/", "http://localhost:8445/", "http://metadata.internal/", "http://rebind.example/",
    ],
)
def test_a_target_that_is_not_public_is_refused_unless_listed(url):
    policy = OutboundPolicy(resolver=resolving({"localhost": ["127.0.0.1", "::1"], "metadata.internal": ["169.254.169.254"],
                                                 "rebind.example": ["10.0.0.7"]}))
    with pytest.raises(OutboundRefused, match="not (a )?public"):
        policy.check(url)


def test_a_name_is_connected_at_the_first_public_address_it_resolves_to():
    policy = OutboundPolicy(resolver=resolving({"mixed.example": ["127.0.0.1", PUBLIC]}))
    checked = policy.check("https://mixed.example/hook")
    assert checked.address == PUBLIC and checked.target.host == "mixed.example" and checked.target.authority == "mixed.example"


def test_allow_list_entries_are_host_and_port():
    policy = OutboundPolicy(allowed=parse_allow_list("localhost:8446, 127.0.0.1:9000, [::1]:9001"),
                            resolver=resolving({"localhost": ["127.0.0.1"]}))
    assert policy.check("http://localhost:8446/token").address == "127.0.0.1"
    assert policy.check("http://127.0.0.1:9000/").address == "127.0.0.1"
    assert policy.check("http://[::1]:9001/").address == "::1"
    for url in ("http://localhost:8445/reset", "http://127.0.0.1:9001/", "http://localhost/"):
        with pytest.raises(OutboundRefused):
            policy.check(url)


def test_allowed_only_reaches_nothing_but_the_list_and_resolves_nothing_else():
    def no_dns(host, port):
        raise AssertionError(f"resolved {host}")

    policy = OutboundPolicy(allowed=parse_allow_list("127.0.0.1:9000"), allowed_only=True, resolver=no_dns)
    assert policy.check("http://127.0.0.1:9000/").address == "127.0.0.1"
    with pytest.raises(OutboundRefused, match="not an allowed target"):
        policy.check("https://example.org/")


def test_a_name_that_does_not_resolve_is_refused_and_one_that_cannot_be_resolved_now_passes_intake_only():
    def unavailable(host, port):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(OutboundRefused, match="does not resolve"):
        OutboundPolicy(resolver=resolving({})).check("https://nowhere.example/", at_intake=True)
    assert OutboundPolicy(resolver=unavailable).check("https://later.example/", at_intake=True).address == ""
    with pytest.raises(OutboundRefused, match="does not resolve"):
        OutboundPolicy(resolver=unavailable).check("https://later.example/")


@pytest.mark.parametrize("entry", ["localhost", "127.0.0.1", "example.org:", "example.org:http", ":80", "[::1]", "host:70000"])
def test_an_allow_list_entry_without_a_port_is_a_configuration_error(entry):
    with pytest.raises(ValueError, match="host:port"):
        parse_allow_list(entry)


def test_the_policy_comes_from_the_settings():
    policy = OutboundPolicy.from_settings(load({"PUSH_OUTBOUND_ALLOWED_TARGETS": "LocalHost.:8446", "PUSH_OUTBOUND_ALLOWED_ONLY": "true"}))
    assert policy.allowed == {("localhost", 8446)} and policy.allowed_only
