#!/usr/bin/env python3
"""bench/rollout/forward.py LISTEN_HOST:PORT TARGET_HOST:PORT — a TCP forwarder.

bench/rollout/run starts one in each pod's network namespace, on 127.0.0.1 at the port of
the Kubernetes API double (whose certificate names 127.0.0.1 only), forwarding to the
harness on the host's end of the pod's veth pair, which forwards on to the double. Like a
sidecar, it listens in the pod's namespace but outside lastcall's PID namespace. Prints
"ready" once it listens; runs until killed.
"""

import asyncio
import sys


async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            w.close()
        except OSError:
            pass


async def main(listen, target):
    lh, lp = listen.rsplit(":", 1)
    th, tp = target.rsplit(":", 1)

    async def handle(r1, w1):
        try:
            r2, w2 = await asyncio.open_connection(th, int(tp))
        except OSError:
            w1.close()
            return
        await asyncio.gather(pipe(r1, w2), pipe(r2, w1))

    server = await asyncio.start_server(handle, lh, int(lp))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
