"""The ledger as an open lake table: immutable, Hive-partitioned Parquet segments per node, and the
finance documents computed over them by Apache Spark (`metering.lake.spark_source`).

    sync(store, lake_dir, node_id)        export what the lake lacks (crash-safe, exactly once)
    sync_file(db_path, lake_dir, node_id) the same for a database file no server holds
    LakeSyncer(store, lake_dir, node_id)  the same continuously, on a thread of a serving node
    spark_source(lake_dir, master=None)   a report source over the lake, computed by Spark

The layout, the state that makes a sync exactly-once and how re-ratings reach the lake are
described in `metering/lake/_layout.py` and `metering/lake/_sync.py`, and in docs/scale-out.md.
"""

from __future__ import annotations

from typing import Any

from metering.lake._layout import LakeError, check_node_id, open_lake, segment_name
from metering.lake._sync import (
    CHUNK_SEQ,
    SEGMENT_COLUMNS,
    SEGMENT_SCHEMA,
    LakeSyncer,
    SyncResult,
    read_state,
    sync,
    sync_file,
)


def spark_source(lake: Any, *, master: str | None = None, billing_tz: str = "UTC") -> Any:
    """A report source (see `metering.services.sources.Source`) over the lake, computed by Spark.
    Imported on use: pyspark and its JVM start only for the commands that need them."""
    from metering.lake._spark import SparkLakeSource

    return SparkLakeSource(lake, master=master, billing_tz=billing_tz)


__all__ = [
    "CHUNK_SEQ", "SEGMENT_COLUMNS", "SEGMENT_SCHEMA", "LakeError", "LakeSyncer", "SyncResult", "check_node_id",
    "open_lake", "read_state", "segment_name", "spark_source", "sync", "sync_file",
]
