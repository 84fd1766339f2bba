"""asyncpg through sidepool in transaction mode.

asyncpg keeps its default statement cache: every parameterised query is a named server-side
statement (`__asyncpg_stmt_1__`, ... the same names on every client for different SQL), and it
introspects types it does not know (the enum `mood`, the composite `pair`) with queries of its
own. Statements prepared in one transaction are executed in later ones, usually on another
server connection. The session-state and error tests also run with statement_cache_size=0
("unnamed": no named statements at all), so that a failure there is told apart from one of
named statements.

Tables and types other than same_name are schema-qualified: only the search_path tests depend
on it.
"""

import asyncio

import asyncpg
import pytest

import busy

pytestmark = pytest.mark.asyncio

CLIENTS = 40
ROUNDS = 3
ROWS_PER_ROUND = 10
MOODS = ["sad", "ok", "happy"]
COPY_COLUMNS = ["id", "name", "amount", "at", "doc", "nums", "blob", "maybe"]
DEFAULT_SEARCH_PATH = '"$user", public'

statement_kinds = pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])


async def connect(dsn, named=True):
    if named:
        return await asyncpg.connect(dsn, timeout=10)
    return await asyncpg.connect(dsn, timeout=10, statement_cache_size=0)




def item(worker, seq):
    """One ap_items row: what is inserted and what must come back."""
    return (worker, seq, MOODS[seq % 3], (seq, f"p{worker}/{seq}" if seq % 4 else None))


def as_tuples(records):
    return [(r[0], r[1], r[2], tuple(r[3])) for r in records]


async def items_worker(dsn, worker):
    conn = await connect(dsn)
    try:
        select = await conn.prepare(
            "SELECT worker, seq, feeling, pt FROM public.ap_items"
            " WHERE worker = $1 AND seq >= $2 ORDER BY seq"
        )
        for r in range(ROUNDS):
            first = r * ROWS_PER_ROUND
            rows = [item(worker, first + k) for k in range(ROWS_PER_ROUND)]
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO public.ap_items (worker, seq, feeling, pt)"
                    " VALUES ($1, $2, $3, $4)",
                    rows,
                )
                count = await conn.fetchval(
                    "SELECT count(*) FROM public.ap_items WHERE worker = $1", worker
                )
                assert count == first + ROWS_PER_ROUND, f"worker {worker}: {count} rows"
            assert not conn.is_in_transaction()
            # The statement prepared before the first round, executed outside any transaction.
            for k in range(0, ROWS_PER_ROUND, 3):
                got = as_tuples(await select.fetch(worker, first + k))
                assert got == rows[k:], f"worker {worker} round {r}: read back {got!r}"
            assert await conn.fetchval("SELECT $1::public.mood", MOODS[r]) == MOODS[r]
            row = await conn.fetchrow(
                "SELECT $1::public.pair AS p, $2::public.mood[] AS ms, $3::int8 + 1 AS n,"
                " $4::text AS nothing",
                (worker, "x"),
                ["happy", "sad"],
                2**40,
                None,
            )
            assert (tuple(row["p"]), row["ms"], row["n"], row["nothing"]) == (
                (worker, "x"),
                ["happy", "sad"],
                2**40 + 1,
                None,
            )
    finally:
        await conn.close()


async def test_40_tasks_run_transactions_prepared_statements_and_custom_types(
    dsn, direct_dsn, run_clean
):
    await run_clean([items_worker(dsn, w) for w in range(CLIENTS)], timeout=40)
    direct = await connect(direct_dsn)
    try:
        count = await direct.fetchval("SELECT count(*) FROM public.ap_items")
    finally:
        await direct.close()
    assert count == CLIENTS * ROUNDS * ROWS_PER_ROUND


async def copy_out_text(conn, table):
    data = bytearray()

    async def sink(chunk):
        data.extend(chunk)

    await conn.copy_from_query(
        f"SELECT * FROM public.{table} ORDER BY id", output=sink, format="text"
    )
    return bytes(data)


async def test_copy_records_to_table_and_copy_from_query_match_direct(dsn, direct_dsn):
    async with asyncio.timeout(30):
        direct = await connect(direct_dsn)
        try:
            expected = await copy_out_text(direct, "copy_src")
            records = await direct.fetch(f"SELECT {', '.join(COPY_COLUMNS)} FROM public.copy_src")
        finally:
            await direct.close()
        assert expected.count(b"\n") == 10000 and len(records) == 10000

        conn = await connect(dsn)
        try:
            assert await copy_out_text(conn, "copy_src") == expected
            result = await conn.copy_records_to_table(
                "ap_copy_dst",
                schema_name="public",
                records=[tuple(r) for r in records],
                columns=COPY_COLUMNS,
            )
            assert result == "COPY 10000"
            assert await conn.fetchval("SELECT count(*) FROM public.ap_copy_dst") == 10000
        finally:
            await conn.close()

        direct = await connect(direct_dsn)
        try:
            assert await copy_out_text(direct, "ap_copy_dst") == expected
        finally:
            await direct.close()


async def error_cycles(dsn, worker, named):
    key = worker * 100 + (0 if named else 5000)
    count = "SELECT count(*) FROM public.ap_err WHERE id BETWEEN $1 AND $2"
    conn = await connect(dsn, named)
    try:
        for k in range(3):
            with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO public.ap_err VALUES ($1, 'gone')", key + k)
                    await conn.fetchval("SELECT 1 / $1::int", 0)
            assert not conn.is_in_transaction()
            with pytest.raises(asyncpg.exceptions.UniqueViolationError):
                async with conn.transaction():
                    for note in ("a", "b"):
                        await conn.execute(
                            "INSERT INTO public.ap_err VALUES ($1, $2)", key + 10 + k, note
                        )
            with pytest.raises(asyncpg.exceptions.PostgresSyntaxError):
                await conn.fetchval("SELEC $1::int", 1)
            kept = await conn.fetchval(count, key, key + 99)
            assert kept == k, f"worker {worker}: rolled-back rows visible ({kept} rows)"
            async with conn.transaction():
                await conn.execute("INSERT INTO public.ap_err VALUES ($1, 'kept')", key + 50 + k)

        # A manual transaction: an error, the server refuses more, an explicit rollback.
        tr = conn.transaction()
        await tr.start()
        await conn.execute("INSERT INTO public.ap_err VALUES ($1, 'gone')", key + 99)
        with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
            await conn.fetchval("SELECT 1 / $1::int", 0)
        with pytest.raises(asyncpg.exceptions.InFailedSQLTransactionError):
            await conn.fetchval("SELECT $1::int", 1)
        await tr.rollback()
        assert await conn.fetchval(count, key + 99, key + 99) == 0
    finally:
        await conn.close()


@statement_kinds
async def test_errors_in_transactions_roll_back_and_connections_stay_usable(
    dsn, direct_dsn, run_clean, named
):
    await run_clean([error_cycles(dsn, w, named) for w in range(10)], timeout=30)
    low = 0 if named else 5000
    direct = await connect(direct_dsn)
    try:
        count = await direct.fetchval(
            "SELECT count(*) FROM public.ap_err WHERE id BETWEEN $1 AND $2", low, low + 4999
        )
    finally:
        await direct.close()
    assert count == 30


class BusyClients(busy.BusyClients):
    async def _loop(self, started):
        conn = await connect(self.dsn, self.named)
        try:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(0.01)")
                    self.tags.append(await conn.fetchval("SELECT tag FROM same_name"))
                started.set()
                if self.stop.is_set():
                    return
        finally:
            await conn.close()



async def read_same_name_20_times(conn):
    """(tag, search_path, backend pid) of 20 autocommit statements."""
    return [
        tuple(
            await conn.fetchrow(
                "SELECT tag, current_setting('search_path'), pg_backend_pid() FROM same_name"
            )
        )
        for _ in range(20)
    ]


@statement_kinds
async def test_search_path_set_in_a_rolled_back_transaction_does_not_hold(
    dsn, through_pool, named
):
    async with asyncio.timeout(40):
        conn = await connect(dsn, named)
        try:
            async with BusyClients(dsn, named) as busy:
                tr = conn.transaction()
                await tr.start()
                await conn.execute("SET search_path TO s1")
                assert await conn.fetchval("SELECT tag FROM same_name") == "s1"
                await tr.rollback()
                seen = await read_same_name_20_times(conn)
        finally:
            await conn.close()
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
        conn = await connect(dsn, named)
        try:
            async with BusyClients(dsn, named) as busy:
                async with conn.transaction():
                    await conn.execute("SET search_path TO s1")
                    set_pid = await conn.fetchval("SELECT pg_backend_pid()")
                seen = await read_same_name_20_times(conn)
        finally:
            await conn.close()
    assert not busy.errors, f"busy clients failed: {busy.errors}"
    assert set(busy.tags) == {"public"}, "another client's search_path leaked"
    assert [(tag, path) for tag, path, _ in seen] == [("s1", "s1")] * 20
    if through_pool:
        pids = {set_pid} | {pid for _, _, pid in seen}
        assert len(pids) > 1, "never left the first server connection: nothing was replayed"


async def test_search_path_of_a_disconnected_client_does_not_reach_new_clients(dsn):
    async with asyncio.timeout(30):
        gone = await connect(dsn, named=False)
        try:
            await gone.execute("SET search_path TO s1")
            assert await gone.fetchval("SELECT tag FROM same_name") == "s1"
        finally:
            await gone.close()
        # Whatever order the pool hands out its (at most 4) idle server connections in, eight
        # clients in a row get the one `gone` used.
        for _ in range(8):
            fresh = await connect(dsn, named=False)
            try:
                seen = await fresh.fetchrow(
                    "SELECT tag, current_setting('search_path') FROM same_name"
                )
            finally:
                await fresh.close()
            assert tuple(seen) == ("public", DEFAULT_SEARCH_PATH)
