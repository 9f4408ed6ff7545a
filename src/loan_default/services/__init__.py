"""Protocol-neutral services used by both the HTTP API and the Celery worker."""
