"""Errors of the generation domain, on the one hierarchy in tenants.errors (the exception handler
renders every ImagegateError in the documented shape). `code` values are public: never rename one.
"""

from __future__ import annotations

from tenants.errors import Conflict, ImagegateError, InvalidRequest


class IdempotencyConflict(ImagegateError):
    status_code = 409
    type = "idempotency_error"
    code = "idempotency_conflict"
    default_message = "This Idempotency-Key was already used with a different request body."


class UpstreamUnavailable(ImagegateError):
    status_code = 503
    type = "api_error"
    code = "upstream_unavailable"
    default_message = "No upstream route could serve this request right now. Retry later."


class UnknownModel(InvalidRequest):
    """Still `invalid_request` on the native API; the compatibility APIs answer it as a 404 the way
    OpenAI and Google do for a model they do not serve."""

    default_message = "Unknown model."


class ModelRetired(InvalidRequest):
    code = "model_retired"
    default_message = "This model was retired."


class JobNotCancelable(Conflict):
    code = "job_not_cancelable"
    default_message = "This job already finished."


class FileInUse(Conflict):
    code = "file_in_use"
    default_message = "This file is an input of a generation that has not finished yet."


class InputMissing(ImagegateError):
    """A job's input file is gone (deleted) by the time the job runs: the job fails with this."""

    status_code = 400
    type = "invalid_request_error"
    code = "input_missing"
    default_message = "An input image of this generation no longer exists."


class InvalidSignature(ImagegateError):
    status_code = 403
    type = "permission_error"
    code = "invalid_signature"
    default_message = "This image URL is invalid or has expired. Fetch the generation again."


class GenerationFailed(ImagegateError):
    """A job the client waited for (`?wait=`) failed: its own error code, an HTTP status that says
    whose fault it was, and the job's document under `generation` beside the error."""

    def __init__(self, *, code: str, message: str, status_code: int, generation: dict, headers: dict):
        self.status_code = status_code
        self.type = "invalid_request_error" if status_code == 400 else "api_error"
        self.code = code
        super().__init__(message, headers=headers, extra={"generation": generation})
