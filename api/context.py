"""The adapters of the request's app: the :class:`~api.services.Services` that :func:`api.app.create_app` built."""
from __future__ import annotations

from flask import current_app

from api.services import Services


def services() -> Services:
    return current_app.extensions["push"]
