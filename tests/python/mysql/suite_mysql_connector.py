"""mysql-connector-python (pure-Python implementation, `use_pure=True`) through sidepool in
transaction mode (`max_open = 4`): caching_sha2_password towards sidepool, server-side prepared
statements (`cursor(prepared=True)`) from 24 concurrent clients, each executed on whichever
server connection the client gets, inside explicit transactions, and errors that leave the
session usable.
"""

import datetime
from decimal import Decimal

import mysql.connector
import pytest
from mysql.connector import errorcode

CLIENTS = 24
ROUNDS = 4
ROWS = 8


def connect(params, through_pool, **kw):
    # autocommit: statements outside start_transaction() commit on their own (the connector's
    # default, off, would open a transaction with every first statement).
    args = dict(params, use_pure=True, connection_timeout=10, autocommit=True, **kw)
    if through_pool:
        # sidepool knows the password, so it answers caching_sha2's fast path.
        args["auth_plugin"] = "caching_sha2_password"
    conn = mysql.connector.connect(**args)
    assert type(conn).__name__ == "MySQLConnection", "the pure-Python implementation"
    return conn


def prepared_worker(target, through_pool, worker):
    conn = connect(target, through_pool)
    try:
        cur = conn.cursor(prepared=True)
        for r in range(ROUNDS):
            conn.start_transaction()
            for i in range(ROWS):
                seq = r * ROWS + i
                at = datetime.datetime(2024, 1, 1, 12, 0, 0, seq * 1000)
                cur.execute(
                    "INSERT INTO mc_items (worker, seq, amount, note, at) VALUES (?, ?, ?, ?, ?)",
                    (worker, seq, Decimal(f"{worker}.{seq:03d}"), f"w{worker}-{seq}", at),
                )
            cur.execute(
                "SELECT COUNT(*), SUM(amount) FROM mc_items WHERE worker = ? AND seq >= ?",
                (worker, r * ROWS),
            )
            count, total = cur.fetchone()
            assert count == ROWS, (worker, r, count)
            expected = sum(Decimal(f"{worker}.{r * ROWS + i:03d}") for i in range(ROWS))
            assert Decimal(total) == expected, (worker, r, total)
            if r % 2 == 1:
                conn.rollback()
            else:
                conn.commit()
            # Outside a transaction, each execute may run on another server connection.
            cur.execute("SELECT note, at FROM mc_items WHERE worker = ? AND seq = ?", (worker, 0))
            note, at = cur.fetchone()
            assert note == f"w{worker}-0" and at == datetime.datetime(2024, 1, 1, 12), (note, at)
        cur.close()
        return worker
    finally:
        conn.close()


def test_24_clients_use_server_side_prepared_statements_in_transactions(
    target, direct, through_pool, run_clean
):
    run_clean(lambda w: prepared_worker(target, through_pool, w), CLIENTS, 120)
    conn = connect(direct, False)
    try:
        cur = conn.cursor()
        # Rounds 0 and 2 were committed, 1 and 3 rolled back.
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT worker) FROM mc_items")
        assert cur.fetchone() == (CLIENTS * 2 * ROWS, CLIENTS)
        cur.execute("SELECT COUNT(*) FROM mc_items WHERE seq >= %s AND seq < %s", (ROWS, 2 * ROWS))
        assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_missing_table_reports_1146_and_the_session_goes_on(target, through_pool):
    conn = connect(target, through_pool)
    try:
        prepared = conn.cursor(prepared=True)
        with pytest.raises(mysql.connector.errors.ProgrammingError) as e:
            prepared.execute("SELECT * FROM no_such_table WHERE id = ?", (1,))
        assert e.value.errno == errorcode.ER_NO_SUCH_TABLE == 1146
        prepared.execute("SELECT ? + 1", (41,))
        assert prepared.fetchone() == (42,)

        plain = conn.cursor()
        conn.start_transaction()
        plain.execute("INSERT INTO mc_err VALUES (1, 'kept')")
        with pytest.raises(mysql.connector.errors.ProgrammingError) as e:
            plain.execute("SELECT * FROM no_such_table")
        assert e.value.errno == 1146
        prepared.execute("INSERT INTO mc_err VALUES (?, ?)", (2, "kept too"))
        conn.commit()
        plain.execute("SELECT id, note FROM mc_err ORDER BY id")
        assert plain.fetchall() == [(1, "kept"), (2, "kept too")]
        with pytest.raises(mysql.connector.errors.IntegrityError) as e:
            prepared.execute("INSERT INTO mc_err VALUES (?, ?)", (1, "dup"))
        assert e.value.errno == 1062
        prepared.execute("SELECT COUNT(*) FROM mc_err")
        assert prepared.fetchone() == (2,)
    finally:
        conn.close()


def test_wrong_password_gets_1045(target, through_pool):
    with pytest.raises(mysql.connector.errors.ProgrammingError) as e:
        connect({**target, "password": "wrong"}, through_pool)
    assert e.value.errno == 1045
