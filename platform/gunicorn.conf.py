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

# Access log lines never carry a query string (verification links and anything a client puts in
# the URL, e.g. a misplaced ?key=) nor the Referer, and one-time tokens in paths (invitations,
# password resets) are masked: access logs are kept and shipped with far less care than secrets.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s" %({x-request-id}o)s'

import re  # noqa: E402

from gunicorn.glogging import Logger  # noqa: E402

_TOKEN_PATHS = re.compile(r"^(/invitations/|/password-reset/[^/]+/)[^/]+")


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = _TOKEN_PATHS.sub(r"\1[redacted]", atoms.get("U", ""))
        atoms["r"] = f"{atoms.get('m', '-')} {atoms['U']} {atoms.get('H', '-')}"
        atoms["q"] = ""
        atoms["f"] = "-"
        return atoms


logger_class = RedactingLogger
