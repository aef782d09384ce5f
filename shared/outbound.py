"""Outbound requests to URLs someone gave the server: one check, and one way to send them.

Webhooks of WalletConnect v1 bridge sessions, a service account's ``token_uri``
and any later URL a client or tenant supplies (outcome feeds) reach the
network only through :class:`OutboundSession`, and are validated at intake with
:meth:`OutboundPolicy.check`. What is refused, and why:

- **The parser that sends decides.** URLs are read with urllib3's
  ``parse_url``, the parser requests sends with; a ``\\`` anywhere, userinfo
  (``user@``, never sent as Basic auth), a scheme other than http(s), port 0
  or no host are refused. (``http://[::1]:8445\\@127.0.0.1/`` read by
  ``urlsplit`` names 127.0.0.1, but urllib3 connects to ``[::1]:8445``.)
- **Allow-list entries are host and port** (``PUSH_OUTBOUND_ALLOWED_TARGETS``):
  a listed target may resolve to a loopback or private address (the
  simulators, a test receiver); ``PUSH_OUTBOUND_ALLOWED_ONLY`` reaches nothing else.
- **Every other target must be public**: its name is resolved when the request
  is sent, and loopback, private, CGNAT, link-local (cloud metadata
  169.254.169.254), unique-local (fd00:ec2::254), multicast, reserved and
  documentation addresses are refused, including their IPv4-in-IPv6 forms
  (``::ffff:127.0.0.1``) and the legacy numeric forms ``getaddrinfo`` accepts
  (``2130706433``, ``127.1``, ``0x7f.1``).
- **The checked address is the one connected to** (no second resolution, so
  DNS rebinding cannot swap it): the connection pool is opened to that IP,
  while ``Host``, TLS SNI and certificate verification keep the URL's name.
- **Redirects are never followed**: the 3xx is the answer. No proxy or
  ``.netrc`` from the environment is used.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.settings import Settings

#: Schemes an outbound URL may have, and the port each defaults to.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Addresses never reached unless their target is allow-listed (beyond what ``ipaddress`` calls not global).
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
        "100.64.0.0/10",  # carrier-grade NAT (Alibaba Cloud's metadata 100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (the cloud metadata service 169.254.169.254)
        "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",  # IETF, benchmarks, docs
        "224.0.0.0/4", "240.0.0.0/4",  # multicast; reserved and broadcast
        "168.63.129.16/32",  # Azure's wire server (metadata and agent): a public address
        "::/96",  # unspecified, loopback, IPv4-compatible (::127.0.0.1)
        "fc00::/7",  # unique local (AWS's metadata fd00:ec2::254)
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
        "2001::/32",  # Teredo: reaches an IPv4 address of the tunnel's choosing
        "2001:db8::/32", "100::/64",  # documentation, discard
    )
)
#: IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64's well-known prefix).
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")
#: Longest URL accepted (requests and servers refuse much shorter ones anyway).
MAX_URL_LENGTH = 4096


class OutboundRefused(ValueError):
    """An outbound URL that must not be requested; the message says why (for a 400 or a recorded failure)."""


@dataclass(frozen=True)
class Target:
    """Where a URL points: scheme, host as urllib3 reads it (names lower-case, IPs canonical) and port."""

    scheme: str
    host: str
    port: int

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, when it is one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def authority(self) -> str:
        """``host[:port]`` as a ``Host`` header names it (the port only when it is not the scheme's)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class Checked:
    """A URL that may be requested, and the address the request goes to."""

    target: Target
    address: str


def _canonical_host(host: str) -> str:
    """An IP literal in its canonical text (legacy IPv4 forms included, as ``getaddrinfo`` reads them), else the name."""
    bare = host.strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if bare and all(c in "0123456789abcdefx." for c in bare):
        try:
            return socket.inet_ntoa(socket.inet_aton(bare))  # 2130706433, 127.1, 0x7f.1, 0177.0.0.1
        except OSError:
            pass
    return bare


def parse(url: str) -> Target:
    """The target of ``url`` read as requests sends it; refuses what must never be requested."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise OutboundRefused("must be an http or https URL")
    if "\\" in url:
        raise OutboundRefused("must not contain a backslash")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise OutboundRefused("must not contain white space or control characters")
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError):
        raise OutboundRefused("must be an http or https URL") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise OutboundRefused("must be an http or https URL")
    authority = url.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if "//" in url else ""
    if parsed.auth is not None or "@" in authority:
        raise OutboundRefused("must not carry a user name or password")
    if not parsed.host:
        raise OutboundRefused("must name a host")
    if parsed.port == 0:
        raise OutboundRefused("must not use port 0")
    return Target(parsed.scheme, _canonical_host(parsed.host), parsed.port or DEFAULT_PORTS[parsed.scheme])


def blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is not a public one (IPv4 carried in IPv6 is judged as that IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64_NETWORK:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return blocked(embedded)
    return any(address in network for network in BLOCKED_NETWORKS if network.version == address.version) or not address.is_global


def parse_allow_list(text: str) -> frozenset[tuple[str, int]]:
    """``host:port`` entries, comma-separated (``[v6]:port`` for IPv6); an entry without a port is an error."""
    entries = set()
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, separator, port = entry.rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"outbound allow-list entry {entry!r} must be host:port")
        entries.add((_canonical_host(host), int(port)))
    return frozenset(entries)


def _system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)]


@dataclass(frozen=True)
class OutboundPolicy:
    """Which targets outbound requests may reach.

    Parameters:
      allowed: (host, port) targets that may resolve to any address (loopback and private ones too).
      allowed_only: reach only ``allowed`` (everything else is refused without resolving it).
      resolver: ``(host, port) -> [address, ...]``; the system's ``getaddrinfo`` by default.
    """

    allowed: frozenset[tuple[str, int]] = frozenset()
    allowed_only: bool = False
    resolver: Callable[[str, int], list[str]] = field(default=_system_resolver, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(allowed=parse_allow_list(settings.outbound_allowed_targets), allowed_only=settings.outbound_allowed_only)

    @classmethod
    def for_urls(cls, urls: Iterable[str]) -> OutboundPolicy:
        """A policy that reaches exactly these URLs' targets (benchmarks and tools that talk to their own simulators)."""
        return cls(allowed=frozenset((t.host, t.port) for t in map(parse, urls)), allowed_only=True)

    def check(self, url: str, *, at_intake: bool = False) -> Checked:
        """The address ``url`` may be requested at; raises :class:`OutboundRefused` saying why not.

        At intake (the API validating a URL it will store) a listed name is not
        resolved, and a name that cannot be resolved right now for a reason other
        than "no such name" is let through: the check is made again, for real,
        when the request is sent.
        """
        target = parse(url)
        listed = (target.host, target.port) in self.allowed
        if not listed and self.allowed_only:
            raise OutboundRefused(f"{target.host}:{target.port} is not an allowed target on this server")
        literal = target.address
        if listed and at_intake and literal is None:
            return Checked(target, "")  # any address of a listed target will do: resolved when the request is sent
        if literal is not None:
            if not listed and blocked(literal):
                raise OutboundRefused(f"{literal} is not a public address")
            return Checked(target, str(literal))
        try:
            addresses = self.resolver(target.host, target.port)
        except socket.gaierror as error:
            if at_intake and error.errno not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                return Checked(target, "")
            raise OutboundRefused(f"{target.host} does not resolve") from None
        except (OSError, UnicodeError):
            raise OutboundRefused(f"{target.host} does not resolve") from None
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if listed or not blocked(address):
                return Checked(target, str(address))
        raise OutboundRefused(f"{target.host} resolves only to addresses that are not public ({', '.join(addresses[:3])})")


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter that connects to the address :meth:`OutboundPolicy.check` answered, keeping the URL's name."""

    def __init__(self, policy: OutboundPolicy):
        self.policy = policy
        super().__init__()

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        checked = self.policy.check(request.url)
        request.outbound_checked = checked
        request.headers["Host"] = checked.target.authority
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=None)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        checked: Checked = request.outbound_checked
        _, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        if checked.target.scheme == "https" and checked.target.address is None:
            # SNI and certificate verification on the URL's name, while the socket goes to the checked address.
            pool_kwargs["server_hostname"] = checked.target.host
        return self.poolmanager.connection_from_host(
            host=checked.address, port=checked.target.port, scheme=checked.target.scheme, pool_kwargs=pool_kwargs
        )


class OutboundSession(requests.Session):
    """A requests session whose every request goes through an :class:`OutboundPolicy`, never following a redirect.

    The one way the server requests a URL someone gave it (webhooks, token endpoints, outcome feeds): requests
    to refused targets raise :class:`OutboundRefused` before anything is sent.

    Parameters:
      policy: the targets it may reach.
    """

    def __init__(self, policy: OutboundPolicy):
        super().__init__()
        self.trust_env = False  # no proxy, CA bundle or .netrc from the environment
        self.adapter = _CheckedAdapter(policy)
        self.mount("http://", self.adapter)
        self.mount("https://", self.adapter)

    def get_adapter(self, url):
        # Every scheme goes to the checked adapter, which refuses what is not http(s) (requests would say "no adapter").
        return self.adapter

    def send(self, request, **kwargs):
        kwargs["allow_redirects"] = False
        return super().send(request, **kwargs)
