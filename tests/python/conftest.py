"""Shared set-up for the Python driver suite (run by proxy/tests/it/drivers_python.rs).

The suite talks to sidepool through SIDEPOOL_DSN and to the same PostgreSQL directly through
DIRECT_DSN (for set-up and for the reference results). Both must be set: the suite never skips.
Pointing SIDEPOOL_DSN at the server itself checks the suite: everything must pass there.
"""

import asyncio
import collections
import os
import re

import psycopg
import pytest

# Every object the suite uses, created fresh once per run, straight on the server.
SCHEMA_SQL = """
DROP SCHEMA IF EXISTS s1 CASCADE;
DROP TABLE IF EXISTS pg_items, pg_err, pg_copy_dst, ap_items, ap_err, ap_copy_dst, copy_src,
    same_name CASCADE;
DROP TYPE IF EXISTS mood, pair CASCADE;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (x int, label text);

CREATE TABLE pg_items (
    worker int, seq int, amount numeric(12, 3), note text, at timestamptz, tags text[],
    doc jsonb, blob bytea, PRIMARY KEY (worker, seq));
CREATE TABLE ap_items (worker int, seq int, feeling mood, pt pair, PRIMARY KEY (worker, seq));
CREATE TABLE pg_err (id int PRIMARY KEY, note text);
CREATE TABLE ap_err (id int PRIMARY KEY, note text);

-- 10,000 rows whose text form has tabs, backslashes, NULLs, arrays, json and bytea.
CREATE TABLE copy_src (
    id int PRIMARY KEY, name text, amount numeric, at timestamptz, doc jsonb, nums int[],
    blob bytea, maybe text);
INSERT INTO copy_src
SELECT g, 'name ' || g || E'\\twith tab \\\\ and backslash', g * 1.25,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       jsonb_build_object('g', g, 'even', g % 2 = 0), ARRAY[g, g + 1],
       decode(md5(g::text), 'hex'), CASE WHEN g % 7 = 0 THEN NULL ELSE 'x' || g END
FROM generate_series(1, 10000) AS g;
CREATE TABLE pg_copy_dst (LIKE copy_src INCLUDING ALL);
CREATE TABLE ap_copy_dst (LIKE copy_src INCLUDING ALL);

-- Same table name in public and in s1: which one a query sees shows its search_path.
CREATE TABLE same_name (tag text);
INSERT INTO same_name VALUES ('public');
CREATE SCHEMA s1;
CREATE TABLE s1.same_name (tag text);
INSERT INTO s1.same_name VALUES ('s1');
"""


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: run this suite through `cargo test -p sidepool --test it "
            "drivers_python::`, or set SIDEPOOL_DSN and DIRECT_DSN to postgresql:// URLs"
        )
    return value


def pytest_configure(config):
    _env("SIDEPOOL_DSN")
    _env("DIRECT_DSN")


@pytest.fixture(scope="session")
def dsn():
    """sidepool's address (postgresql:// URL)."""
    return _env("SIDEPOOL_DSN")


@pytest.fixture(scope="session")
def direct_dsn():
    """The server itself, bypassing sidepool."""
    return _env("DIRECT_DSN")


@pytest.fixture(scope="session")
def through_pool(dsn, direct_dsn):
    """True when the suite runs through sidepool (not in its self-check against the server)."""
    return dsn != direct_dsn


@pytest.fixture(scope="session", autouse=True)
def schema(direct_dsn):
    with psycopg.connect(direct_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(SCHEMA_SQL)


# Statement names (the drivers' and sidepool's), which differ from client to client.
STATEMENT_NAME = re.compile(r'"(__asyncpg_stmt_[0-9a-f]+__|_pg3_[0-9]+|sidepool_[0-9]+)"')


def describe(errors):
    """Distinct errors (type and first line of the message, statement names elided), most
    frequent first."""
    counts = collections.Counter(
        STATEMENT_NAME.sub(
            '"<statement>"',
            f"{type(e).__module__}.{type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
        )
        for e in errors
    )
    return "\n".join(f"  {n} x {text}" for text, n in counts.most_common(8))


@pytest.fixture
def run_clean():
    """`await run_clean(coros, timeout)`: runs the coroutines concurrently and fails the test
    unless every one of them finished without an exception within `timeout` seconds, listing
    how many failed and their distinct errors. Returns their results in order."""

    async def run(coros, timeout):
        results = await asyncio.wait_for(
            asyncio.gather(*coros, return_exceptions=True), timeout
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            pytest.fail(
                f"{len(errors)} of {len(results)} concurrent clients failed:\n"
                + describe(errors),
                pytrace=False,
            )
        return results

    return run
