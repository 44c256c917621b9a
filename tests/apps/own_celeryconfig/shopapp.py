"""The project's app: the demo tasks, configured from the project's own celeryconfig.py."""
from demo_app.tasks import app

app.config_from_object("celeryconfig")
