"""Scheduled: delete input files past their retention (see generation.files.services)."""

from generation.files.services import files_expire

FILES_SCHEDULE_NAME = "generation: delete expired input files"


def expire_files() -> int:
    return files_expire()
