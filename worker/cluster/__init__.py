"""Celery workers seen from outside: start local worker processes, ask the broker who consumes a queue."""
