"""The project's own Celery settings (Celery tutorial style)."""
broker_url = "redis://127.0.0.1:6390/9"
result_backend = "redis://127.0.0.1:6390/10"
task_acks_late = False
worker_prefetch_multiplier = 4
# Kept by the workers (merged): how the project's producers order and prioritise queues.
broker_transport_options = {"visibility_timeout": 3600, "queue_order_strategy": "priority", "priority_steps": [0, 3, 6, 9]}
