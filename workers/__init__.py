"""The job API of bbsupervise: define jobs, enqueue them, configure the producer.

    from workers import job, enqueue, configure

    @job(queue="newsletter-sender")
    def send_newsletter(email, body): ...

    configure(beanstalk_url="beanstalk://127.0.0.1:11300")
    send_newsletter.enqueue("a@b.c", "hi")
"""
from workers import hooks
from workers.enqueue import enqueue
from workers.errors import EnqueueError, JobTimeout, ServerDraining, ServerUnavailable
from workers.policy import configure
from workers.registry import job

__all__ = ["job", "enqueue", "configure", "hooks", "JobTimeout", "EnqueueError",
           "ServerUnavailable", "ServerDraining"]
