"""The send entry: one notification of a send command, as the API builds it and the workers read it (issue 19, move 1).

A send command's ``entries`` are the JSON form of :class:`SendEntry`. An entry
names either a user (PowerAuth sends and campaigns: every registration of the
user, optionally one activation, ``personal`` only to active activations) or
one device directly (the WalletConnect paths, which know the token already:
``{"_id", "token", "platform", "environment"}``), and carries the body (the
JSON of :class:`shared.payload.Body`), whether it is silent and of high
priority, and what a dead token does (``dead_token``: workers/deliver.py).
The JSON form is the one older workers read, unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.payload import Body


@dataclass(frozen=True)
class SendEntry:
    body: dict
    user_id: str | None = None
    activation_id: str | None = None
    personal: bool = False
    silent: bool = False
    high_priority: bool = True
    device: dict | None = None
    dead_token: str | None = None

    @classmethod
    def for_user(cls, user_id: str | None, body: dict, *, activation_id: str | None = None, personal: bool = False,
                 silent: bool = False, high_priority: bool = True) -> SendEntry:
        return cls(body=body, user_id=user_id, activation_id=activation_id, personal=personal, silent=silent,
                   high_priority=high_priority)

    @classmethod
    def for_device(cls, device: dict, body: dict, *, silent: bool = False, high_priority: bool = True,
                   dead_token: str | None = None) -> SendEntry:
        return cls(body=body, device=device, silent=silent, high_priority=high_priority, dead_token=dead_token)

    def to_json(self) -> dict:
        if self.device is not None:
            data = {"device": self.device, "body": self.body, "silent": self.silent, "high_priority": self.high_priority}
            if self.dead_token is not None:
                data["dead_token"] = self.dead_token
            return data
        return {"user_id": self.user_id, "activation_id": self.activation_id, "personal": self.personal,
                "silent": self.silent, "high_priority": self.high_priority, "body": self.body}

    @classmethod
    def from_json(cls, data: Mapping) -> SendEntry:
        return cls(body=data["body"], user_id=data.get("user_id"), activation_id=data.get("activation_id"),
                   personal=bool(data.get("personal", False)), silent=bool(data.get("silent", False)),
                   high_priority=bool(data.get("high_priority", True)), device=data.get("device"),
                   dead_token=data.get("dead_token"))

    def decoded_body(self) -> Body:
        return Body.from_json(self.body)
