"""Names of bangd's scheduled jobs, shared by the daemon that schedules them and the
control commands that run them on request."""

RECONCILE_JOB = "reconcile"
RETENTION_JOB = "retention"
INTEGRITY_JOB = "integrity"


def import_job(source: str) -> str:
    return f"import:{source}"
