"""setup_logging: a job's log holds what went wrong, not only the console."""

from __future__ import annotations

import subprocess
import sys


def test_an_uncaught_error_is_written_to_the_job_log_and_still_fails_the_job(tmp_path):
    log = tmp_path / "job.log"
    script = (
        "from medlens.log import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "raise ValueError('lengths cannot be inferred')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    text = log.read_text()
    assert (
        "the job failed" in text and "Traceback" in text and "ValueError: lengths cannot be inferred" in text
    )
    assert "ValueError: lengths cannot be inferred" in proc.stderr  # the console keeps it too
