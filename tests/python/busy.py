"""Helpers shared by the driver suites (imported from the test modules; pytest puts this
directory on sys.path)."""

import asyncio


def first_line(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


class BusyClients:
    """`n` clients that keep every server connection busy with short transactions (10 ms
    sleep, then read same_name) so that a client between two transactions lands on another
    server connection. They record the tags they saw; none of them sets search_path.
    Subclasses implement `_loop(started)` with their driver."""

    def __init__(self, dsn, named, n=6):
        self.dsn, self.named, self.n = dsn, named, n
        self.stop = asyncio.Event()
        self.tags = []
        self.errors = []

    async def _loop(self, started):
        raise NotImplementedError

    async def __aenter__(self):
        starts = [asyncio.Event() for _ in range(self.n)]
        self.tasks = [asyncio.create_task(self._loop(s)) for s in starts]
        all_started = asyncio.ensure_future(asyncio.gather(*(s.wait() for s in starts)))
        done, _ = await asyncio.wait(
            [all_started, *self.tasks], timeout=20, return_when=asyncio.FIRST_COMPLETED
        )
        if all_started not in done:
            all_started.cancel()
            await asyncio.gather(all_started, return_exceptions=True)
            await self.__aexit__(None, None, None)
            raise AssertionError(f"busy clients failed to start: {self.errors or 'timeout'}")
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        results = await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 20)
        self.errors = sorted({first_line(r) for r in results if isinstance(r, BaseException)})
