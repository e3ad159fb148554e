"""gunicorn settings for the web processes: ``gunicorn -c python:algoways.gunicorn algoways.wsgi``.

Each gunicorn worker is one Python process, so at most one core: the web tier uses every core
only while every worker has requests to serve. A keep-alive connection stays with the worker
that accepted it, and a handful of busy API clients, connecting at the same moment, often land
mostly on one worker, which then caps the whole tier at one core while the others idle
(bench_orders, 8 clients on 2 workers: 290 orders/s with connections split 4/4, 196/s split
about 7/1). Like nginx's ``keepalive_requests`` and Apache's ``MaxKeepAliveRequests``, a
connection is closed after ``KEEPALIVE_REQUESTS`` requests, its last response saying
``Connection: close``; the client opens a new one, which the least busy worker is the quickest
to accept. A reconnect on loopback costs well under a millisecond, once per that many requests.
"""

#: Requests served on one keep-alive connection before the server closes it.
KEEPALIVE_REQUESTS = 20


def pre_request(worker, req):
    """The last request a connection may carry is answered with ``Connection: close``."""
    if req.req_number % KEEPALIVE_REQUESTS == 0:
        req.must_close = True


def post_worker_init(worker):
    """Import every view before the worker takes its first request, not during it.

    Django loads the URLconf, and with it every view and serializer module, on a process's first
    request: 0.28 s of imports on the benchmark machine, which the first order each new worker
    served waited for (bench_orders' single-client p99 was that one request, 0.3-0.47 s).
    Connections stay lazy: each worker opens its own after the fork. What is loaded then is
    frozen out of the garbage collector's full collections (``startup_objects_freeze``).
    """
    from django.urls import get_resolver

    from algoways.gc_freeze import startup_objects_freeze

    get_resolver().url_patterns  # noqa: B018 - evaluated for its imports
    startup_objects_freeze()
