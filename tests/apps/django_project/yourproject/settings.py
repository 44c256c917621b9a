"""Settings of a small Django project (no database needed by the tasks)."""
SECRET_KEY = "test-fixture-not-a-secret"
INSTALLED_APPS = ["yourproject"]
USE_TZ = True
TIME_ZONE = "UTC"

# What the project thinks its Celery settings are. The collection must override the delivery guarantees and the
# broker (this URL points nowhere) and keep the project's own schedule.
CELERY_BROKER_URL = "redis://localhost:6390/9"
CELERY_TASK_ACKS_LATE = False
# Kept (a project's key names): workers, producers, Flower, the audit and the watchdog all read and write
# "yourproject:"-prefixed keys and channels on the shared broker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": "yourproject:"}
CELERY_BEAT_SCHEDULE = {
    "tick": {"task": "yourproject.tasks.tick", "schedule": 5.0},
}
