"""The gateway's Python client for the metering service.

    from metering.client import UsageClient

    with UsageClient("http://metering:8000", ingest_token, spool_dir="/var/spool/metering") as client:
        client.send({"request_id": response.id, "occurred_at": ..., "api_key_id": ..., "model": ...,
                     "endpoint": "chat.completions", "usage": response.usage.model_dump()})

See docs/integrations.md for the guarantees.
"""

from metering.client._client import ClientError, Reservation, UsageClient
from metering.client._spool import QueueFull, Rejected

__all__ = ["ClientError", "QueueFull", "Rejected", "Reservation", "UsageClient"]
