"""psycopg 3 through sidepool in transaction mode.

Connections use prepare_threshold=0, so every statement is prepared on the server under a name
(`_pg3_0`, `_pg3_1`, ... the same names on all 40 clients for different SQL) and executed later,
often on another server connection than the one it was prepared on. The session-state and error
tests also run with prepare_threshold=None ("unnamed": no named statements at all), so that a
failure there is told apart from one of named statements.

Tables other than same_name are schema-qualified: only the search_path tests depend on it.
"""

import asyncio
import datetime
from decimal import Decimal

import psycopg
import pytest

import busy
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.asyncio

CLIENTS = 40
ROUNDS = 3
ROWS_PER_ROUND = 10
BASE_TIME = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
COPY_COLUMNS = "id, name, amount, at, doc, nums, blob, maybe"
COPY_TYPES = ["int4", "text", "numeric", "timestamptz", "jsonb", "int4[]", "bytea", "text"]
DEFAULT_SEARCH_PATH = '"$user", public'

statement_kinds = pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])


async def connect(dsn, autocommit=True, named=True):
    return await psycopg.AsyncConnection.connect(
        dsn,
        prepare_threshold=0 if named else None,
        autocommit=autocommit,
        connect_timeout=10,
    )


async def one(conn, sql, params=None):
    cur = await conn.execute(sql, params)
    return await cur.fetchone()




def item(worker, seq):
    """One pg_items row as Python values: what is inserted and what must come back."""
    return (
        worker,
        seq,
        Decimal(f"{seq}.125"),
        None if seq % 5 == 0 else f"note {worker}/{seq} \u00fc\t\\",
        BASE_TIME + datetime.timedelta(seconds=worker * 1000 + seq),
        [f"t{seq}", "a,b", None],
        {"w": worker, "s": seq, "nested": [1, "two", None]},
        bytes([worker, seq, 0, 255]),
    )


async def types_round_trip(conn, worker):
    params = (
        2**40 + worker,
        "text \u00e9 'quoted'",
        Decimal("12345678901234567890.000000001"),
        BASE_TIME,
        Jsonb({"k": [worker, None]}),
        [1, None, 3],
        b"\x00\x01\xff",
        None,
    )
    row = await one(
        conn,
        "SELECT %s::int8, %s::text, %s::numeric, %s::timestamptz, %s::jsonb, %s::int4[],"
        " %s::bytea, %s::text",
        params,
    )
    expected = params[:4] + ({"k": [worker, None]},) + params[5:]
    assert row == expected, f"worker {worker}: {row!r} != {expected!r}"


async def items_worker(dsn, worker):
    async with await connect(dsn) as conn:
        for r in range(ROUNDS):
            first = r * ROWS_PER_ROUND
            rows = [item(worker, first + k) for k in range(ROWS_PER_ROUND)]
            async with conn.transaction():
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO public.pg_items"
                        " (worker, seq, amount, note, at, tags, doc, blob)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [row[:6] + (Jsonb(row[6]),) + row[7:] for row in rows],
                    )
                    await cur.execute(
                        "SELECT worker, seq, amount, note, at, tags, doc, blob"
                        " FROM public.pg_items WHERE worker = %s AND seq >= %s ORDER BY seq",
                        (worker, first),
                    )
                    got = await cur.fetchall()
                assert got == rows, f"worker {worker} round {r}: read back {got!r}"
            assert conn.info.transaction_status == TransactionStatus.IDLE
            (count,) = await one(
                conn, "SELECT count(*) FROM public.pg_items WHERE worker = %s", (worker,)
            )
            assert count == first + ROWS_PER_ROUND, f"worker {worker} round {r}: {count} rows"
            await types_round_trip(conn, worker)


async def test_40_prepared_async_connections_run_transactions_executemany_and_types(
    dsn, direct_dsn, run_clean
):
    await run_clean([items_worker(dsn, w) for w in range(CLIENTS)], timeout=40)
    async with await connect(direct_dsn) as direct:
        (count,) = await one(direct, "SELECT count(*) FROM public.pg_items")
    assert count == CLIENTS * ROUNDS * ROWS_PER_ROUND


async def copy_out_text(conn, table):
    data = bytearray()
    async with conn.cursor() as cur:
        async with cur.copy(f"COPY (SELECT * FROM public.{table} ORDER BY id) TO STDOUT") as copy:
            async for block in copy:
                data += block
    return bytes(data)


async def test_copy_10000_rows_out_and_in_matches_direct(dsn, direct_dsn):
    async with asyncio.timeout(30):
        async with await connect(direct_dsn) as direct:
            expected = await copy_out_text(direct, "copy_src")
        assert expected.count(b"\n") == 10000

        async with await connect(dsn) as conn:
            assert await copy_out_text(conn, "copy_src") == expected

            async with conn.cursor() as cur:
                async with cur.copy(f"COPY public.copy_src ({COPY_COLUMNS}) TO STDOUT") as copy:
                    copy.set_types(COPY_TYPES)
                    rows = [row async for row in copy.rows()]
            assert len(rows) == 10000
            assert rows[6][7] is None and rows[0][4] == {"g": 1, "even": False}

            async with conn.cursor() as cur:
                sql = f"COPY public.pg_copy_dst ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                async with cur.copy(sql) as copy:
                    copy.set_types(COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
            assert await one(conn, "SELECT count(*) FROM public.pg_copy_dst") == (10000,)

        async with await connect(direct_dsn) as direct:
            assert await copy_out_text(direct, "pg_copy_dst") == expected


async def error_cycles(dsn, worker, named):
    key = worker * 100 + (0 if named else 5000)
    async with await connect(dsn, named=named) as conn:
        for k in range(3):
            with pytest.raises(psycopg.errors.DivisionByZero):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO public.pg_err VALUES (%s, 'gone')", (key + k,)
                    )
                    await conn.execute("SELECT 1 / %s::int", (0,))
            assert conn.info.transaction_status == TransactionStatus.IDLE
            with pytest.raises(psycopg.errors.UniqueViolation):
                async with conn.transaction():
                    for note in ("a", "b"):
                        await conn.execute(
                            "INSERT INTO public.pg_err VALUES (%s, %s)", (key + 10 + k, note)
                        )
            with pytest.raises(psycopg.errors.SyntaxError):
                await conn.execute("SELEC 1")
            (kept,) = await one(
                conn,
                "SELECT count(*) FROM public.pg_err WHERE id BETWEEN %s AND %s",
                (key, key + 99),
            )
            assert kept == k, f"worker {worker}: rolled-back rows visible ({kept} rows)"
            async with conn.transaction():
                await conn.execute("INSERT INTO public.pg_err VALUES (%s, 'kept')", (key + 50 + k,))

    # Without autocommit: the driver's own implicit BEGIN, an error, an explicit rollback.
    async with await connect(dsn, autocommit=False, named=named) as conn:
        await conn.execute("INSERT INTO public.pg_err VALUES (%s, 'gone')", (key + 99,))
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / %s::int", (0,))
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await conn.execute("SELECT 1")
        await conn.rollback()
        gone = await one(conn, "SELECT count(*) FROM public.pg_err WHERE id = %s", (key + 99,))
        assert gone == (0,)
        await conn.commit()


@statement_kinds
async def test_errors_in_transactions_roll_back_and_connections_stay_usable(
    dsn, direct_dsn, run_clean, named
):
    await run_clean([error_cycles(dsn, w, named) for w in range(10)], timeout=30)
    low = 0 if named else 5000
    async with await connect(direct_dsn) as direct:
        count = await one(
            direct,
            "SELECT count(*) FROM public.pg_err WHERE id BETWEEN %s AND %s",
            (low, low + 4999),
        )
    assert count == (30,)


class BusyClients(busy.BusyClients):
    async def _loop(self, started):
        async with await connect(self.dsn, named=self.named) as conn:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(0.01)")
                    (tag,) = await one(conn, "SELECT tag FROM same_name")
                self.tags.append(tag)
                started.set()
                if self.stop.is_set():
                    return



async def read_same_name_20_times(conn):
    """(tag, search_path, backend pid) of 20 autocommit statements."""
    return [
        await one(
            conn, "SELECT tag, current_setting('search_path'), pg_backend_pid() FROM same_name"
        )
        for _ in range(20)
    ]


@statement_kinds
async def test_search_path_set_in_a_rolled_back_transaction_does_not_hold(
    dsn, through_pool, named
):
    async with asyncio.timeout(40):
        async with await connect(dsn, named=named) as conn, BusyClients(dsn, named) as busy:
            async with conn.transaction(force_rollback=True):
                await conn.execute("SET search_path TO s1")
                assert await one(conn, "SELECT tag FROM same_name") == ("s1",)
            seen = await read_same_name_20_times(conn)
    assert not busy.errors, f"busy clients failed: {busy.errors}"
    assert set(busy.tags) == {"public"}, "another client's search_path leaked"
    assert {(tag, path) for tag, path, _ in seen} == {("public", DEFAULT_SEARCH_PATH)}
    if through_pool:
        assert len({pid for _, _, pid in seen}) > 1, "never left one server connection"


@statement_kinds
async def test_search_path_set_in_a_transaction_holds_for_20_autocommit_statements(
    dsn, through_pool, named
):
    async with asyncio.timeout(40):
        async with await connect(dsn, named=named) as conn, BusyClients(dsn, named) as busy:
            async with conn.transaction():
                await conn.execute("SET search_path TO s1")
                (set_pid,) = await one(conn, "SELECT pg_backend_pid()")
            seen = await read_same_name_20_times(conn)
    assert not busy.errors, f"busy clients failed: {busy.errors}"
    assert set(busy.tags) == {"public"}, "another client's search_path leaked"
    assert [(tag, path) for tag, path, _ in seen] == [("s1", "s1")] * 20
    if through_pool:
        pids = {set_pid} | {pid for _, _, pid in seen}
        assert len(pids) > 1, "never left the first server connection: nothing was replayed"


def assert_s1_followed_only_its_client(busy, seen, through_pool):
    """`seen` (from read_same_name_20_times) is s1 throughout, read on more than one server
    connection through the pool, and no busy client saw s1."""
    assert not busy.errors, f"busy clients failed: {busy.errors}"
    assert set(busy.tags) == {"public"}, "another client's search_path leaked"
    assert [(tag, path) for tag, path, _ in seen] == [("s1", "s1")] * 20
    if through_pool:
        assert len({pid for _, _, pid in seen}) > 1, "never left one server connection"


@statement_kinds
async def test_search_path_set_in_autocommit_holds_for_6_shows_and_20_statements(
    dsn, through_pool, named
):
    """Issue 16, case 1: with named statements the SET is parsed with no server connection
    attached and executed later; it must still follow the client."""
    async with asyncio.timeout(40):
        async with await connect(dsn, named=named) as conn, BusyClients(dsn, named) as busy:
            await conn.execute("SET search_path TO s1")
            shows = [await one(conn, "SHOW search_path") for _ in range(6)]
            seen = await read_same_name_20_times(conn)
    assert shows == [("s1",)] * 6
    assert_s1_followed_only_its_client(busy, seen, through_pool)


@statement_kinds
async def test_search_path_set_by_set_config_in_a_select_follows_the_client(
    dsn, through_pool, named
):
    async with asyncio.timeout(40):
        async with await connect(dsn, named=named) as conn, BusyClients(dsn, named) as busy:
            assert await one(
                conn, "SELECT pg_catalog.set_config('search_path', 's1', false)"
            ) == ("s1",)
            seen = await read_same_name_20_times(conn)
    assert_s1_followed_only_its_client(busy, seen, through_pool)


async def deallocating_client(dsn, worker):
    """Three named statements run 30 times; every fifth round (a different one per worker) the
    client drops every statement of its session: by psycopg's own DEALLOCATE ALL, sent after a
    ROLLBACK run as SQL (workers 0, 3, 6), by DEALLOCATE ALL (1, 4, 7) or by DISCARD ALL (2, 5)."""
    async with await connect(dsn, named=True) as conn:
        for i in range(30):
            assert await one(conn, "SELECT %s::int * 2", (i,)) == (i * 2,)
            assert await one(conn, "SELECT tag FROM same_name") == ("public",)
            count = await one(conn, "SELECT count(*) FROM public.copy_src WHERE id <= %s", (i,))
            assert count == (i,)
            if i % 5 != worker % 5:
                continue
            if worker % 3 == 0:
                await conn.execute("BEGIN")
                await conn.execute("SELECT 1")
                await conn.execute("ROLLBACK")
            else:
                await conn.execute("DEALLOCATE ALL" if worker % 3 == 1 else "DISCARD ALL")


async def test_8_clients_running_deallocate_all_or_discard_all_keep_their_statements(
    dsn, run_clean
):
    """Issue 16, case 2: a client's DEALLOCATE ALL / DISCARD ALL acts on its own statements
    only; no other client may lose one (`prepared statement "sidepool_N" does not exist`)."""
    await run_clean([deallocating_client(dsn, w) for w in range(8)], timeout=60)


async def test_search_path_of_a_disconnected_client_does_not_reach_new_clients(dsn):
    async with asyncio.timeout(30):
        async with await connect(dsn, named=False) as gone:
            await gone.execute("SET search_path TO s1")
            assert await one(gone, "SELECT tag FROM same_name") == ("s1",)
        # Whatever order the pool hands out its (at most 4) idle server connections in, eight
        # clients in a row get the one `gone` used.
        for _ in range(8):
            async with await connect(dsn, named=False) as fresh:
                seen = await one(fresh, "SELECT tag, current_setting('search_path') FROM same_name")
            assert seen == ("public", DEFAULT_SEARCH_PATH)
