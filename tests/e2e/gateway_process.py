"""A gateway process for tests/e2e/test_client.py: sends the records of an NDJSON file through a
UsageClient with a spool and prints the index of each record once `send` has returned, so the
test can SIGKILL it at a known point. Imports only the client, as a gateway would.

    python -m tests.e2e.gateway_process URL SPOOL_DIR RECORDS.ndjson TOKEN [--die-after-post]

--die-after-post: the process kills itself right after the first batch is acknowledged by the
service and before the client writes down that progress (the worst moment for bookkeeping).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import orjson

from metering.client import UsageClient


def main() -> None:
    url, spool_dir, path, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    client = UsageClient(url, token, spool_dir=spool_dir, batch_size=40, flush_interval=0.05)
    if "--die-after-post" in sys.argv:

        def ack_then_die(chunk, count=None):
            os.kill(os.getpid(), signal.SIGKILL)  # the POST succeeded; the cursor is never written

        client._buffer.ack = ack_then_die
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            client.send(orjson.loads(line))
            print(i, flush=True)
    print("sent", flush=True)
    time.sleep(600)  # the test kills this process


if __name__ == "__main__":
    main()
