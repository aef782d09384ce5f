"""Operator tools: ``python -m ops.queues`` (queue depth table)."""
