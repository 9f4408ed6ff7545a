"""Celery batch worker."""
