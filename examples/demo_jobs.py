"""The demo's jobs, one module per app as in real use (``imports = examples.demo_jobs``).

Three queues, each with jobs that succeed quickly, take a moment, or always
fail. With ``max_job_retries`` as set in conf/demo.ini, a failing job is
retried (emails) or buried at once (images, reports), and stays buried for
an operator to inspect with ``peek-buried``.
"""
from __future__ import annotations

import time

from workers import job


class PermanentError(Exception):
    """A failure that no retry will fix (a bounced address, a corrupt file)."""


# -- emails: many small jobs -------------------------------------------------
@job(queue="emails")
def send_welcome(user_id: int, address: str) -> None:
    """Render and send a welcome mail; instant here."""


@job(queue="emails")
def send_to_bounced(address: str) -> None:
    raise PermanentError(f"550 mailbox unavailable: {address}")


@job(name="NewsletterJob", queue="emails")
class NewsletterJob:
    """Ruby backburner's class style, under the name a Ruby producer would put."""

    def perform(self, list_id: int, subject: str) -> None:
        pass


# -- images: some take 0.1-0.3 s ---------------------------------------------
@job(queue="images")
def thumbnail(image_id: int) -> None:
    """Instant here."""


@job(queue="images")
def resize(image_id: int, seconds: float) -> None:
    time.sleep(seconds)


@job(queue="images")
def decode_corrupt(image_id: int) -> None:
    raise PermanentError(f"image {image_id}: truncated JPEG")


# -- reports: one worker, slower jobs ----------------------------------------
@job(queue="reports")
def daily_totals(day: str) -> None:
    """Instant here."""


@job(queue="reports")
def render_pdf(report_id: int, seconds: float) -> None:
    time.sleep(seconds)


@job(queue="reports", ttr=30)
def annual_report(year: int, seconds: float = 2.0) -> None:
    """A long job: the demo's graceful stop waits for it to finish."""
    time.sleep(seconds)
