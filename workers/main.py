"""Entry module for the Dramatiq worker CLI: ``dramatiq workers.main --queues ...``.

The CLI imports this module and consumes with the global broker, so this is
the one place where importing sets things up.
"""
from shared.broker import make_broker
from shared.settings import load
from workers.actors import register

settings = load()
broker = make_broker(settings)
register(broker, settings)
