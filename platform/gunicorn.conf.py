# Gunicorn settings shared by `make run` and production (override with GUNICORN_CMD_ARGS).
# gthread: requests that wait for their job (`?wait=`) park a thread, not a process.
import os

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "32"))
timeout = 120
graceful_timeout = 10
keepalive = 5
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "1") == "1" else None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
