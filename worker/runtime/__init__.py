"""The Celery runtime: app configuration, tasks, beat schedules, reaper, housekeeping."""
