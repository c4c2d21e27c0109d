"""Fixtures: the fake SearXNG servers and the real websearch service process."""

from __future__ import annotations

import pytest

from searxng_fake import FakeSearxng, ServiceProcess


@pytest.fixture(scope="module")
def fake():
    other = FakeSearxng()  # a second server that must never be contacted
    server = FakeSearxng(redirect_to=other.url)
    server.other = other
    yield server
    server.close()
    other.close()


@pytest.fixture(scope="module")
def service(fake):
    """The real service process, configured with the fake SearXNG, 1 s search timeout."""
    svc = ServiceProcess(fake.url, timeout_s=1.0)
    yield svc
    svc.close()


@pytest.fixture
def start_service():
    """Start extra service processes for one test; closed (newest first) afterwards."""
    started = []
    yield lambda url, timeout_s=1.0: started.append(ServiceProcess(url, timeout_s)) or started[-1]
    for svc in reversed(started):
        svc.close()
