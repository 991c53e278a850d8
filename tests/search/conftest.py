"""A real PostgreSQL server for the storage tests (session-scoped): skipped with the reason when none can be
started here, a failure under CI (``$CI`` set), so CI cannot pass by skipping them."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def pg_url():
    from lightnn.search._pgtest import PgServer, PgUnavailable

    try:
        server = PgServer.start()
    except PgUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and no PostgreSQL server could be started: {e}", pytrace=False)
        pytest.skip(f"no PostgreSQL server could be started: {e}")
    try:
        yield server.url
    finally:
        server.stop()
