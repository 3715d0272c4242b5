#!/usr/bin/env python3
"""A TCP relay with a bandwidth limit, to stand for a registry across a network link.

    deploy/slowlink.py LISTEN_PORT TARGET_HOST:PORT MBYTES_PER_SECOND

The benchmark puts it in front of the local registry when it measures the registry-proxy's
pull-through cache: a cache pays off when upstream is far away, which a registry on loopback
is not. The limit is shared by all connections (one link), in the direction upstream → client.
"""
import asyncio
import sys
import time


class Link:
    def __init__(self, rate):
        self.rate = rate
        self.next_free = time.monotonic()

    async def send(self, n):
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        delay = self.next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


async def pipe(reader, writer, link):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            if link is not None:
                await link.send(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    port, target, mbps = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, tport = target.rsplit(":", 1)
    link = Link(mbps * 1e6)

    async def handle(creader, cwriter):
        try:
            ureader, uwriter = await asyncio.open_connection(host, int(tport))
        except OSError:
            cwriter.close()
            return
        await asyncio.gather(pipe(creader, uwriter, None), pipe(ureader, cwriter, link))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
