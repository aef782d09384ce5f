"""A pymongo command listener for tests that count what a piece of code asks the database (``command collection``)."""
from __future__ import annotations

from pymongo import monitoring


class CommandsSeen(monitoring.CommandListener):
    """Every command started, as ``"<command name> <collection>"`` (a ``getMore``'s second word is its cursor id)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event) -> None:
        self.names.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass
