"""Shared set-up for the MySQL driver suite (run by proxy/tests/it/mysql_drivers_python.rs).

The suite talks to sidepool through MYSQL_SIDEPOOL_DSN and to the same MariaDB directly through
MYSQL_DIRECT_DSN (`mysql://user:password@host:port/db`), for set-up and reference results. Both
must be set: the suite never skips. Pointing both at the server checks the suite itself.

The files are named `suite_*.py`, not `test_*.py`, so that a plain `pytest tests/python` (the
PostgreSQL suite, whose conftest needs a PostgreSQL) does not collect them; they run by path with
`--confcutdir tests/python/mysql`. This conftest only defines fixtures, so loading it from the
PostgreSQL run is harmless.
"""

import collections
import concurrent.futures
import os
import urllib.parse

import pymysql
import pytest

SCHEMA_SQL = [
    "DROP TABLE IF EXISTS pm_items, pm_err, mc_items, mc_err, state_probe",
    "CREATE TABLE pm_items (worker INT, seq INT, amount DECIMAL(12, 3), note VARCHAR(200),"
    " PRIMARY KEY (worker, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE mc_items (worker INT, seq INT, amount DECIMAL(12, 3), note VARCHAR(200),"
    " at DATETIME(6), PRIMARY KEY (worker, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE pm_err (id INT PRIMARY KEY, note VARCHAR(50)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE mc_err (id INT PRIMARY KEY, note VARCHAR(50)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
]


def _env(name):
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(
            f"{name} is not set: run this suite through `cargo test -p sidepool --test it "
            "mysql_drivers_python::`, or set MYSQL_SIDEPOOL_DSN and MYSQL_DIRECT_DSN to "
            "mysql:// URLs"
        )
    return value


def parse_dsn(url):
    """connect() keyword arguments of a mysql:// URL."""
    u = urllib.parse.urlsplit(url)
    return {
        "host": u.hostname,
        "port": u.port or 3306,
        "user": urllib.parse.unquote(u.username or ""),
        "password": urllib.parse.unquote(u.password or ""),
        "database": u.path.lstrip("/") or None,
    }


@pytest.fixture(scope="session")
def target():
    """sidepool's address, as connect() keyword arguments."""
    return parse_dsn(_env("MYSQL_SIDEPOOL_DSN"))


@pytest.fixture(scope="session")
def direct():
    """The server itself, bypassing sidepool."""
    return parse_dsn(_env("MYSQL_DIRECT_DSN"))


@pytest.fixture(scope="session")
def through_pool(target, direct):
    """True when the suite runs through sidepool (not in its self-check against the server)."""
    return target != direct


@pytest.fixture(scope="session", autouse=True)
def schema(direct):
    conn = pymysql.connect(**direct, autocommit=True, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            for sql in SCHEMA_SQL:
                cur.execute(sql)
    finally:
        conn.close()


def describe(errors):
    """Distinct errors (type and first line), most frequent first."""
    counts = collections.Counter(
        f"{type(e).__module__}.{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        for e in errors
    )
    return "\n".join(f"  {n} x {text}" for text, n in counts.most_common(8))


@pytest.fixture
def run_clean():
    """`run_clean(fn, n, timeout)`: runs `fn(i)` for i in 0..n on n threads at once and fails
    the test unless every call returned within `timeout` seconds without an exception, listing
    the distinct errors. Returns the results in order."""

    def run(fn, n, timeout):
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(fn, i) for i in range(n)]
            done, pending = concurrent.futures.wait(futures, timeout=timeout)
            if pending:
                pytest.fail(
                    f"{len(pending)} of {n} concurrent clients did not finish within {timeout} s",
                    pytrace=False,
                )
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                pytest.fail(
                    f"{len(errors)} of {n} concurrent clients failed:\n" + describe(errors),
                    pytrace=False,
                )
            return [f.result() for f in futures]

    return run
