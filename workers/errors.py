"""Exceptions that users of ``workers`` catch or see in logs."""
from __future__ import annotations


class JobTimeout(BaseException):
    """A job ran past its deadline (TTR - 1 s) and was stopped.

    A ``BaseException``, like dramatiq's ``TimeLimitExceeded``, so that a
    job's own ``except Exception`` cannot swallow it and run on past the TTR.
    """


class EnqueueError(Exception):
    """A job could not be put; the message names the server and the cause."""


class ServerUnavailable(EnqueueError):
    """beanstalkd could not be reached after the bounded retries."""


class ServerDraining(EnqueueError):
    """beanstalkd is in drain mode (it got SIGUSR1) and refuses new jobs."""
