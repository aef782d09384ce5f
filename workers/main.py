"""Entry module for the Dramatiq worker CLI: ``dramatiq workers.main --queues ...``.

The CLI imports this module and consumes with the global broker, so this is
the one place where importing sets things up.
"""
from shared import logs
from shared.broker import make_broker
from shared.metrics import add_worker_prometheus
from shared.settings import load
from workers.actors import register

settings = load()
logs.configure(settings.log_format)
broker = make_broker(settings)
if settings.log_format == "json":
    broker.add_middleware(logs.message_log_middleware())
if settings.worker_metrics_port:
    # Before register(): the middleware sets up multi-process metrics before any metric exists.
    add_worker_prometheus(broker, settings)
register(broker, settings)
