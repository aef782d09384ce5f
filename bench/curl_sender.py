"""A candidate the project's sender was chosen against: libcurl's multi interface (pycurl) on the asyncio loop.

Bench-only, kept so the comparison in the README can be run again:
``python -m bench.client --sender bench.curl_sender:curl_sender``. libcurl
tells the loop which sockets to watch (``M_SOCKETFUNCTION`` →
``add_reader``/``add_writer``) and when to call it back (``M_TIMERFUNCTION``
→ ``call_later``); requests multiplex over HTTP/2 (``PIPE_MULTIPLEX``,
``PIPEWAIT``) on at most ``connections`` connections, and easy handles are
reused. pycurl's wheel bundles libcurl with nghttp2 and OpenSSL.
"""
from __future__ import annotations

import asyncio
from io import BytesIO

import pycurl

from devstack.credentials import AppCredentials
from workers.delivery.apns import ApnsTokenSigner

#: Milliseconds a request may take (the project's sender: 10 s).
REQUEST_TIMEOUT_MS = 10_000
PAYLOAD = b'{"aps":{"alert":{"title":"bench","body":"the sender alone"}}}'


class CurlMultiSender:
    """HTTP/2 requests through one ``CurlMulti`` driven by the running event loop.

    Parameters:
      connections: the most connections to one host.
      ca_file: the CA bundle that verifies the server.
    """

    def __init__(self, *, connections: int, ca_file: str):
        self.loop = asyncio.get_running_loop()
        self.ca_file = ca_file
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, connections)
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._arm)
        self.timer: asyncio.TimerHandle | None = None
        self.idle: list[pycurl.Curl] = []

    def _watch(self, event: int, fd: int, multi, socket_data) -> None:
        reading = event in (pycurl.POLL_IN, pycurl.POLL_INOUT)
        writing = event in (pycurl.POLL_OUT, pycurl.POLL_INOUT)
        if reading:
            self.loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        else:
            self.loop.remove_reader(fd)
        if writing:
            self.loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        else:
            self.loop.remove_writer(fd)

    def _arm(self, milliseconds: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if milliseconds >= 0:
            self.timer = self.loop.call_later(milliseconds / 1000, self._act, pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, what: int) -> None:
        while self.multi.socket_action(fd, what)[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        _, done, failed = self.multi.info_read()
        for easy in done:
            self.multi.remove_handle(easy)
            easy.future.set_result((easy.getinfo(pycurl.RESPONSE_CODE), easy.head, easy.body.getvalue()))
            self.idle.append(easy)
        for easy, _errno, message in failed:
            self.multi.remove_handle(easy)
            easy.future.set_exception(ConnectionError(message))
            self.idle.append(easy)

    def request(self, url: str, headers: list[str], body: bytes) -> asyncio.Future:
        """POST ``body``; answer the future of (status, header lines, body)."""
        if self.idle:
            easy = self.idle.pop()
        else:
            easy = pycurl.Curl()
            easy.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
            easy.setopt(pycurl.PIPEWAIT, 1)
            easy.setopt(pycurl.CAINFO, self.ca_file)
            easy.setopt(pycurl.TIMEOUT_MS, REQUEST_TIMEOUT_MS)
        easy.body, easy.head = BytesIO(), []
        easy.setopt(pycurl.URL, url)
        easy.setopt(pycurl.HTTPHEADER, headers)
        easy.setopt(pycurl.POSTFIELDS, body)
        easy.setopt(pycurl.WRITEFUNCTION, easy.body.write)
        easy.setopt(pycurl.HEADERFUNCTION, easy.head.append)
        easy.future = self.loop.create_future()
        self.multi.add_handle(easy)
        return easy.future


async def curl_sender(port: int, ca_file: str, credentials: AppCredentials, connections: int):
    """bench.client's sender factory: APNs token auth through :class:`CurlMultiSender`."""
    sender = CurlMultiSender(connections=connections, ca_file=ca_file)
    signer = ApnsTokenSigner(key_id=credentials.key_id, team_id=credentials.team_id, private_key_pem=credentials.apns_key_pem)

    async def send(i: int) -> int:
        headers = [f"authorization: bearer {signer.token()}", f"apns-topic: {credentials.bundle}", "apns-push-type: alert",
                   "apns-priority: 10"]
        status, _head, _body = await sender.request(f"https://127.0.0.1:{port}/3/device/0{i:063x}", headers, PAYLOAD)
        return status

    async def close() -> None:
        sender.multi.close()

    return send, close
