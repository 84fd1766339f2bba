"""PyMySQL through sidepool in transaction mode (`max_open = 4`).

PyMySQL interpolates parameters on the client (no server-side prepared statements), so this
file is about the text protocol: caching_sha2_password towards sidepool, 24 concurrent clients
with explicit transactions (commit and rollback), multi-row inserts, session settings that
must follow a client across server connections, and errors that leave the session usable.
"""

from decimal import Decimal

import pymysql
import pytest

CLIENTS = 24
ROUNDS = 4
ROWS = 10


def connect(params, **kw):
    return pymysql.connect(**params, connect_timeout=10, read_timeout=60, **kw)


def items_worker(target, worker):
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            for r in range(ROUNDS):
                conn.begin()
                rows = [
                    (worker, r * ROWS + i, Decimal(f"{worker}.{i:03d}"), f"w{worker} r{r} ✓")
                    for i in range(ROWS)
                ]
                cur.executemany(
                    "INSERT INTO pm_items (worker, seq, amount, note) VALUES (%s, %s, %s, %s)",
                    rows,
                )
                cur.execute("SELECT COUNT(*) FROM pm_items WHERE worker = %s", (worker,))
                (seen,) = cur.fetchone()
                assert seen == (r + 1) * ROWS, (worker, r, seen)
                if r % 2 == 1:
                    conn.rollback()
                    # A rolled-back round is retried so every worker ends with every round.
                    conn.begin()
                    cur.executemany(
                        "INSERT INTO pm_items (worker, seq, amount, note)"
                        " VALUES (%s, %s, %s, %s)",
                        rows,
                    )
                conn.commit()
        return worker
    finally:
        conn.close()


def test_24_clients_run_transactions_with_commit_and_rollback(target, direct, run_clean):
    run_clean(lambda w: items_worker(target, w), CLIENTS, 120)
    conn = connect(direct)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT worker) FROM pm_items")
            assert cur.fetchone() == (CLIENTS * ROUNDS * ROWS, CLIENTS)
            cur.execute("SELECT note FROM pm_items WHERE worker = 3 AND seq = 0")
            assert cur.fetchone() == ("w3 r0 ✓",)
    finally:
        conn.close()


def test_missing_table_reports_1146_and_the_session_goes_on(target):
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM no_such_table")
            assert e.value.args[0] == 1146
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            # Inside a transaction: MariaDB keeps the transaction open after the error.
            conn.begin()
            cur.execute("INSERT INTO pm_err VALUES (1, 'kept')")
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM no_such_table")
            assert e.value.args[0] == 1146
            cur.execute("INSERT INTO pm_err VALUES (2, 'kept too')")
            conn.commit()
            cur.execute("SELECT COUNT(*) FROM pm_err")
            assert cur.fetchone() == (2,)
            # A duplicate key (1062) outside a transaction: the statement fails, nothing else.
            with pytest.raises(pymysql.err.IntegrityError) as e:
                cur.execute("INSERT INTO pm_err VALUES (1, 'dup')")
            assert e.value.args[0] == 1062
            cur.execute("SELECT note FROM pm_err WHERE id = 1")
            assert cur.fetchone() == ("kept",)
    finally:
        conn.close()


def time_zone_worker(target, worker):
    tz = f"+{worker % 12:02d}:{(worker * 7) % 60:02d}"
    conn = connect(target, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = %s", (tz,))
            for _ in range(15):
                cur.execute("SELECT @@session.time_zone")
                assert cur.fetchone() == (tz,), worker
        return tz
    finally:
        conn.close()


def test_session_settings_follow_each_of_20_clients_across_connections(target, run_clean):
    run_clean(lambda w: time_zone_worker(target, w), 20, 120)


def test_wrong_password_gets_1045(target):
    with pytest.raises(pymysql.err.OperationalError) as e:
        connect({**target, "password": "wrong"})
    assert e.value.args[0] == 1045
