"""The report engine over the lake, on Apache Spark: the two intermediate tables of the finance
documents (`usage_arrow`, `class_quantities_arrow`), with the same schemas and order as the DuckDB
queries (`metering.store.queries`), so the same Polars code in `metering.services.reports` builds the same
documents from either.

- Records: every usage segment of the window's UTC days; a `request_id` found more than once (a
  retry that reached another node, a restatement after a re-rating) counts once. The copy kept has
  the content of the earliest received copy (what one node would have kept) and, among copies with
  that content, the newest pricing (`restated_at`, else `received_at`). Copies whose content differs
  are a conflict: reported (`conflicts`), never summed.
- Buckets: the report's [start, end) instants in UTC (local days of any zone, computed by
  `metering.timewindows`), as a broadcast table binned by UTC hour; a record joins the bins of its
  hour and keeps the bucket whose range holds it (exact for any boundary).
- Accounts: the keys snapshots of every node; a key no node registered is `unassigned`.
- Quantities per token class come from `metering.tokenclasses` (`linear`), as every other engine's.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metering.lake._layout import DAY_DIR, SEGMENT, LakeError, open_lake
from metering.lake._sync import SEGMENT_SCHEMA
from metering.ratecard import ALL_PRICE_FIELDS, Price, RateCard, RateVersion
from metering.records import epoch_micros
from metering.store.queries import COUNT_FIELDS, UNASSIGNED, GroupBy
from metering.tokenclasses import TOKEN_CLASSES, linear

HOUR_MICROS = 3_600_000_000
_SESSION: Any = None


# --- the session -------------------------------------------------------------------------------------------


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def session(master: str | None = None, conf: dict[str, str] | None = None) -> Any:
    """The process's one SparkSession (built on first use): `local[*]` unless told, offline (no
    packages fetched), quiet (errors only), UTC."""
    global _SESSION
    if _SESSION is not None:
        return _SESSION
    if _java() is None:
        raise LakeError("Apache Spark needs Java 17 or later, and none was found (no java on PATH, no JAVA_HOME): "
                        "install a JDK or JRE, e.g. `apt-get install openjdk-17-jre-headless`")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise LakeError("pyspark is not installed: `pip install 'metering[spark]'`") from None
    builder = SparkSession.builder.appName("metering-reports")
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # else spark-submit started us, with its --master
        master = master or "local[*]"
        builder = builder.master(master)
    master = master or "spark-submit's"
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        log_config = resources.files("metering.lake").joinpath("log4j2.properties")
        builder = (builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}")
                   .config("spark.ui.enabled", "false"))
    builder = (builder.config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.ansi.enabled", "true")
               .config("spark.sql.parquet.int96RebaseModeInRead", "CORRECTED")
               .config("spark.sql.parquet.datetimeRebaseModeInRead", "CORRECTED"))
    if master.startswith("local"):
        builder = builder.config("spark.sql.shuffle.partitions", str(max(4, 2 * (os.cpu_count() or 1))))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        _SESSION = builder.getOrCreate()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakeError(f"Apache Spark could not start (master {master}): {first}") from None
    _SESSION.sparkContext.setLogLevel("ERROR")
    return _SESSION


# --- expressions from the token-class table ---------------------------------------------------------------


def quantity(token_class: Any) -> Any:
    """A class's quantity of a record as a Spark column (a null field counts as 0)."""
    from pyspark.sql import functions as F

    return linear(token_class.terms, lambda f: F.coalesce(F.col(f).cast("long"), F.lit(0)))


def class_cost(token_class: Any, unit_pico: Any) -> Any:
    """quantity x unit price (pico-dollars per unit, a column or an int), exact in DECIMAL(38, 0)."""
    from pyspark.sql import functions as F

    price = unit_pico if not isinstance(unit_pico, int) else F.lit(unit_pico)
    return quantity(token_class).cast("decimal(38,0)") * price.cast("decimal(38,0)")


# --- the lake, checked -------------------------------------------------------------------------------------


def _is_local(lake: str) -> bool:
    return "://" not in lake or lake.startswith("file://")


def _local_path(lake: str) -> Path:
    return Path(lake[len("file://"):] if lake.startswith("file://") else lake)


def check_segments(lake: Path) -> int:
    """Every file under DIR/usage is one of our segments (name and columns); returns how many."""
    usage = lake / "usage"
    if not usage.is_dir():
        raise LakeError(f"the lake {lake} has no usage segments yet: run `metering lake sync` (or `metering serve "
                        "--lake`) into it first")
    count = 0
    for entry in sorted(usage.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if not entry.is_dir() or not DAY_DIR.match(entry.name):
            raise LakeError(f"{entry}: not a partition of this lake (expected directories named day=YYYY-MM-DD)")
        for path in sorted(entry.iterdir()):
            if path.name.startswith((".", "_")):
                continue
            if not SEGMENT.match(path.name):
                raise LakeError(f"{path}: not a segment of this lake (expected <node>-<first_seq>-<last_seq>.parquet)")
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise LakeError(f"{path}: not a Parquet file ({exc})") from None
            wrong = [f"{f.name} ({f.type})" for f in SEGMENT_SCHEMA
                     if schema.get_field_index(f.name) < 0 or schema.field(f.name).type != f.type]
            if wrong:
                raise LakeError(f"{path}: not a segment of this lake: missing or mistyped columns {', '.join(wrong)}")
            count += 1
    if not count:
        raise LakeError(f"the lake {lake} has no usage segments yet: run `metering lake sync` into it first")
    return count


def _path(lake: str, *parts: str) -> str:
    return "/".join([lake.rstrip("/"), *parts])


# --- the source --------------------------------------------------------------------------------------------


class SparkLakeSource:
    """A report source (`metering.services.sources.Source`) over a lake, computed by Spark."""

    def __init__(self, lake: Path | str, *, master: str | None = None, clock: Callable[[], datetime] | None = None,
                 conf: dict[str, str] | None = None, billing_tz: str = "UTC") -> None:
        self.lake = str(lake)
        self.billing_tz = billing_tz
        if _is_local(self.lake):
            open_lake(_local_path(self.lake), create=False)
            check_segments(_local_path(self.lake))
        self.spark = session(master, conf)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.conflicts: list[str] = []  # request_ids with conflicting copies (a sample), from the last query
        self.conflict_count = 0
        self.warnings: list[str] = []
        self._cached: list[Any] = []  # DataFrames cached for one query, released after it
        self.card = self._rate_card()
        self._keys = self._key_accounts()

    # --- snapshots ---------------------------------------------------------------------------------------
    def _read(self, name: str) -> Any:
        try:
            return self.spark.read.parquet(_path(self.lake, name))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0]
            raise LakeError(f"{_path(self.lake, name)}: cannot be read as the lake's {name} snapshots ({first})") from None

    def _rate_card(self) -> RateCard:
        rows = self._read("rate_card").toArrow().to_pylist()
        by_id: dict[int, tuple[str, RateVersion]] = {}
        for row in rows:
            prices = {}
            for name in ALL_PRICE_FIELDS:
                current, listed = row[f"{name}_current"], row[f"{name}_list"]
                prices[name] = None if current is None else Price(Decimal(current), Decimal(listed))
            version = RateVersion(id=row["id"], model=row["model"], effective_from=row["effective_from"].astimezone(UTC),
                                  **prices)
            seen = by_id.get(row["id"])
            if seen is None:
                by_id[row["id"]] = (row["node_id"], version)
            elif seen[1] != version:
                raise LakeError(
                    f"the rate cards of nodes {seen[0]!r} and {row['node_id']!r} differ at version {row['id']} "
                    f"({seen[1].model} from {seen[1].effective_from:%Y-%m-%d} vs {version.model} from "
                    f"{version.effective_from:%Y-%m-%d}, or its prices): every node must add the same versions in "
                    "the same order (seed them from the same rate card file)")
        card = RateCard()
        for _, version in sorted(by_id.values(), key=lambda item: item[1].id):
            card.add(version)
        return card

    def _key_accounts(self) -> Any:
        """api_key_id -> account_id, key_name as a small DataFrame, one row per key (a key registered
        on several nodes with different accounts is a warning; the first node's, by id, is used)."""
        from pyspark.sql.types import StringType, StructField, StructType

        keys: dict[str, tuple[str, str, str | None]] = {}
        split = set()
        for row in sorted(self._read("keys").toArrow().to_pylist(), key=lambda r: (r["api_key_id"], r["node_id"])):
            seen = keys.setdefault(row["api_key_id"], (row["node_id"], row["account_id"], row["name"]))
            if seen[1] != row["account_id"]:
                split.add(row["api_key_id"])
        if split:
            self.warnings.append("keys registered with different accounts on different nodes (the first node's "
                                 f"account is used): {', '.join(sorted(split)[:5])}")
        schema = StructType([StructField("api_key_id", StringType()), StructField("account_id", StringType()),
                             StructField("key_name", StringType())])
        return self.spark.createDataFrame([(k, v[1], v[2]) for k, v in keys.items()], schema)

    # --- records -------------------------------------------------------------------------------------------
    def _records(self, start: datetime, end: datetime) -> Any:
        """The window's records, each request_id once (see the module's doc)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        first_day, last_day = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
        usage = self.spark.read.parquet(_path(self.lake, "usage"))
        records = usage.where(
            (F.col("day") >= F.lit(first_day)) & (F.col("day") <= F.lit(last_day))
            & (F.unix_micros("occurred_at") >= F.lit(epoch_micros(start)))
            & (F.unix_micros("occurred_at") < F.lit(epoch_micros(end))))
        self.conflicts, self.conflict_count = [], 0
        # Within one node's first exports a request_id is unique (the ledger's key): copies come only
        # from other nodes and from restatements. Without either in the window there is nothing to do.
        facts = records.agg(F.countDistinct("node_id").alias("nodes"),
                            F.count_if(F.col("restatement").isNotNull()).alias("restated")).first()
        if facts is None or (facts["nodes"] <= 1 and facts["restated"] == 0):
            return records
        # Ids seen more than once, found by a 64-bit hash (a shuffle of 8 bytes a record, not the ids);
        # a collision only makes a unique id a candidate, which the exact ranking below keeps as it is.
        records = records.withColumn("_h", F.xxhash64("request_id"))
        repeated = records.groupBy("_h").agg(F.count(F.lit(1)).alias("_copies")).where("_copies > 1").select("_h").cache()
        n = repeated.count()
        self._cached.append(repeated)
        if n == 0:
            return records.drop("_h")
        small = F.broadcast(repeated) if n <= 1_000_000 else repeated
        single = records.join(small, "_h", "left_anti").drop("_h")
        content = F.struct(*[F.col(c) for c in ("occurred_at", "api_key_id", "model", "endpoint", "input_tokens",
                                                "cached_tokens", "cache_write_tokens", "output_tokens",
                                                "thinking_tokens", "web_search_requests")],
                           F.array_sort(F.map_entries(F.col("tags"))).alias("tags"))
        everything = Window.partitionBy("request_id").orderBy("received_at", "node_id", "restatement").rowsBetween(
            Window.unboundedPreceding, Window.unboundedFollowing)
        copies = (records.join(small, "_h", "left_semi").drop("_h").withColumn("_content", content)
                  .withColumn("_kept", F.first("_content").over(everything))
                  .withColumn("_variants", F.size(F.collect_set("_content").over(everything))))
        conflicted = copies.where("_variants > 1").select("request_id").distinct()
        self.conflict_count = conflicted.count()
        if self.conflict_count:
            self.conflicts = sorted(r["request_id"] for r in conflicted.limit(10).collect())
        newest = Window.partitionBy("request_id").orderBy(
            F.coalesce("restated_at", "received_at").desc(), F.col("restatement").desc_nulls_last(), "node_id")
        kept = (copies.where(F.col("_content").eqNullSafe(F.col("_kept"))).withColumn("_rank", F.row_number().over(newest))
                .where("_rank = 1").drop("_content", "_kept", "_variants", "_rank"))
        return single.unionByName(kept)

    def _bucketed(self, buckets: list[tuple[datetime, datetime]], account_id: str | None) -> Any:
        """The window's records with `bucket` (the index of the bucket holding occurred_at) and the
        key's `account_id` and `key_name`; filtered to one account when given."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import IntegerType, LongType, StructField, StructType

        rows = []
        for idx, (lo, hi) in enumerate(buckets):
            lo_us, hi_us = epoch_micros(lo), epoch_micros(hi)
            rows += [(hour, idx, lo_us, hi_us) for hour in range(lo_us // HOUR_MICROS, (hi_us - 1) // HOUR_MICROS + 1)]
        schema = StructType([StructField("_hour", LongType()), StructField("bucket", IntegerType()),
                             StructField("_lo", LongType()), StructField("_hi", LongType())])
        bins = F.broadcast(self.spark.createDataFrame(rows, schema))
        records = self._records(buckets[0][0], buckets[-1][1]).withColumn("_us", F.unix_micros("occurred_at"))
        joined = (records.withColumn("_hour", F.floor(F.col("_us") / F.lit(HOUR_MICROS)).cast("long"))
                  .join(bins, "_hour").where((F.col("_us") >= F.col("_lo")) & (F.col("_us") < F.col("_hi")))
                  .join(F.broadcast(self._keys), "api_key_id", "left")
                  .withColumn("account_id", F.coalesce(F.col("account_id"), F.lit(UNASSIGNED))))
        if account_id is not None:
            joined = joined.where(F.col("account_id") == F.lit(account_id))
        return joined

    # --- the two tables --------------------------------------------------------------------------------------
    def usage_arrow(self, *, buckets: list[tuple[datetime, datetime]], group_by: GroupBy,
                    account_id: str | None = None) -> pa.Table:
        """As `queries.usage_arrow`: `bucket`, the group fields by name, the counts, `cost` and
        `list_cost` (DECIMAL(38, 12)); ordered by bucket and group, nulls last."""
        from pyspark.sql import functions as F

        records = self._bucketed(buckets, account_id)
        groups = []
        for name in group_by.fields:
            column = (F.try_element_at(F.col("tags"), F.lit(name[4:])) if name.startswith("tag:")
                      else F.col(name))
            groups.append(column.alias(name))
        zero = F.lit(0).cast("decimal(38,12)")
        measures = {
            "requests": F.count(F.lit(1)),
            "input_tokens": F.sum("input_tokens"), "cached_tokens": F.sum("cached_tokens"),
            "cache_write_tokens": F.sum("cache_write_tokens"), "output_tokens": F.sum("output_tokens"),
            "thinking_tokens": F.coalesce(F.sum("thinking_tokens"), F.lit(0)),
            "web_search_requests": F.sum("web_search_requests"),
            "unpriced_requests": F.count_if(F.col("rate_version_id").isNull()),
        }
        assert tuple(measures) == COUNT_FIELDS
        summed = records.groupBy(F.col("bucket"), *groups).agg(
            *[m.cast("long").alias(name) for name, m in measures.items()],
            F.coalesce(F.sum("cost"), zero).cast("decimal(38,12)").alias("cost"),
            F.coalesce(F.sum("list_cost"), zero).cast("decimal(38,12)").alias("list_cost"))
        return self._collect(summed, ["bucket", *group_by.fields])

    def class_quantities_arrow(self, *, buckets: list[tuple[datetime, datetime]],
                               account_id: str | None = None, tags: bool = False) -> pa.Table:
        """As `queries.class_quantities_arrow`: per bucket x account x key x model x rate version (x the
        record's tags, a map, with `tags`), the requests, each class's quantity and the stored cost and
        list cost in pico-dollars."""
        from pyspark.sql import functions as F

        records = self._bucketed(buckets, account_id)
        pico = F.lit(10**12).cast("decimal(13,0)")
        zero = F.lit(0).cast("decimal(38,12)")
        keys = ["bucket", "account_id", "api_key_id", "model", "rate_version_id"]
        if tags:  # a map cannot be grouped in Spark: its entries, sorted, can
            records = records.withColumn("_tags", F.array_sort(F.map_entries(F.col("tags"))))
            keys.append("_tags")
        summed = records.groupBy(*keys).agg(
            F.max("key_name").alias("key_name"),
            F.count(F.lit(1)).cast("long").alias("requests"),
            *[F.sum(quantity(c)).cast("long").alias(c.name) for c in TOKEN_CLASSES],
            (F.coalesce(F.sum("cost"), zero) * pico).cast("decimal(38,0)").alias("cost_pico"),
            (F.coalesce(F.sum("list_cost"), zero) * pico).cast("decimal(38,0)").alias("list_cost_pico"))
        if tags:
            summed = summed.withColumn("tags", F.map_from_entries("_tags"))
        columns = ["bucket", "account_id", "key_name", "api_key_id", "model", "rate_version_id",
                   *(["tags"] if tags else []), "requests", *[c.name for c in TOKEN_CLASSES], "cost_pico",
                   "list_cost_pico"]
        order = [c for c in columns if c != "tags"]
        return self._collect(summed.select(*columns), order)

    # --- what the documents also ask of a source ---------------------------------------------------------------
    @property
    def key_names(self) -> dict[str, str | None]:
        return {row["api_key_id"]: row["key_name"] for row in self._keys.collect()}

    def periods(self) -> list[dict[str, Any]]:
        """Closed billing months are node-local (each node stores the figures it closed): the lake's
        documents are computed from usage, as a node's are for its open months."""
        return []

    def _collect(self, frame: Any, order: list[str]) -> pa.Table:
        try:
            return _arrow(frame, order)
        finally:
            for cached in self._cached:
                cached.unpersist()
            self._cached.clear()

    def report_notes(self) -> dict[str, Any]:
        """What a document made from this source should say beyond its figures (nothing, usually)."""
        notes: dict[str, Any] = {}
        if self.conflict_count:
            notes["conflicts"] = {"request_ids": self.conflict_count, "examples": self.conflicts,
                                  "rule": "copies of a request_id with different content on different nodes; the "
                                          "earliest received copy is counted, the others are not"}
        if self.warnings:
            notes["warnings"] = list(self.warnings)
        return notes

    def warn(self, stream: Any = None) -> None:
        stream = stream or sys.stderr
        if self.conflict_count:
            print(f"metering: warning: {self.conflict_count} request_id(s) have conflicting content on different "
                  f"nodes (the earliest received copy is counted): {', '.join(self.conflicts)}", file=stream)
        for warning in self.warnings:
            print(f"metering: warning: {warning}", file=stream)


def _arrow(frame: Any, order: list[str]) -> pa.Table:
    """The (small, aggregated) result on the driver, sorted as DuckDB's ORDER BY sorts: ascending,
    nulls last, strings by their bytes. Sorting here spares Spark a global sort's sampling job."""
    table = frame.toArrow()
    table = table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
                                  for f in table.schema]))
    return table.sort_by([(name, "ascending", "at_end") for name in order])

