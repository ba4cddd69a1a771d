"""The anonymize stage's data work as Spark jobs: the same files as :mod:`recsys.privacy.anonymize`.

For a week too big for one machine (see :func:`recsys.io.spark.choose_engine`):

* the pseudonyms are computed once per **distinct** user id (the week's events' and users' ids),
  on the executors (``mapInPandas`` running :func:`~recsys.privacy.anonymize.pseudonymize`), and
  joined back; the key travels to the executors inside the pickled function, never as a literal of
  a Spark plan or SQL text, and erased users are flagged there too (no pseudonym list in a plan);
* each column gets its policy action (:data:`~recsys.privacy.anonymize.EVENT_POLICY`,
  :data:`~recsys.privacy.anonymize.USER_POLICY`): unknown columns are refused (fail closed) and the
  coarsening functions are the pandas path's own, run on Arrow batches (``pandas_udf``), so a value
  is coarsened the same way on both engines;
* k-anonymity (:func:`enforce_k_anonymity_spark`) walks the same generalization ladder as
  :func:`~recsys.privacy.anonymize.enforce_k_anonymity`, with group sizes counted by Spark;
* rows keep the order of the validated file (what the pandas path gives).

Nothing of the users reaches the driver but counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from recsys.core.errors import ValidationFailed
from recsys.io.spark_lake import ORDER, pandas_schema, read_file, sample
from recsys.io.storage import Lake
from recsys.privacy.anonymize import (
    BROAD_AGE,
    EVENT_POLICY,
    QUASI_IDENTIFIERS,
    SUPPRESSED,
    USER_POLICY,
    Action,
    KAnonymityReport,
    age_band,
    apply_policy,
    enforce_k_anonymity,
    pseudonymize,
    week_of,
    zip3,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

USER_ID = "user_id"
_SIZE = "_group_size"
_ERASED = "_erased"
_NA = "<NA>"  # how the pandas path groups a missing quasi-identifier


def _col(name: str) -> Column:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for Spark stages

    return F.col("`" + name.replace("`", "``") + "`")


def pseudonym_table(ids: DataFrame, key: bytes, erased: frozenset[str] = frozenset()) -> DataFrame:
    """``user_id``, ``user`` (its pseudonym), ``_erased`` for each row of ``ids`` (distinct user ids),
    computed on the executors. The key is captured by the function Spark pickles for them."""
    id_type = dict(ids.dtypes)[USER_ID]

    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            users = pd.Series(pseudonymize(frame[USER_ID].tolist(), key), index=frame.index, dtype="string")
            yield pd.DataFrame({USER_ID: frame[USER_ID], "user": users, _ERASED: users.isin(erased)})

    return ids.mapInPandas(batches, schema=f"{USER_ID} {id_type}, user string, {_ERASED} boolean")


def _coarsen(function: Callable[[pd.Series], pd.Series]) -> Callable[[Column], Column]:
    """The pandas path's coarsening ``function`` as a Spark column function (one Arrow batch at a time)."""
    from pyspark.sql.functions import pandas_udf  # deferred: pyspark is heavy

    @pandas_udf("string")  # type: ignore[call-overload]
    def udf(values: pd.Series) -> pd.Series:
        return function(values).astype(object).where(lambda s: s.notna(), None)

    return udf


_COARSENED: dict[str, tuple[str, Callable[[pd.Series], pd.Series]]] = {
    "age_band": ("age_band", age_band),
    "zip3": ("zip3", zip3),
    "week": ("signup_week", week_of),
}


def apply_policy_spark(
    frame: DataFrame, policy: dict[str, Action], pseudonyms: DataFrame, what: str
) -> DataFrame:
    """:func:`~recsys.privacy.anonymize.apply_policy` on Spark: ``pseudonyms`` (:func:`pseudonym_table`)
    gives each user id its pseudonym; rows of erased users are dropped. Keeps :data:`ORDER`."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    columns = [c for c in frame.columns if c != ORDER]
    unknown = [c for c in columns if c not in policy]
    if unknown:
        raise ValidationFailed(
            f"{what}: columns {unknown} are not covered by the anonymization policy; "
            "declare them in recsys/privacy/anonymize.py before they can pass (fail closed)"
        )
    if any(policy[c] == "pseudonymize" and c != USER_ID for c in columns):
        raise ValidationFailed(f"{what}: only '{USER_ID}' can be pseudonymized on Spark")
    if USER_ID in columns and policy[USER_ID] == "pseudonymize":
        frame = frame.join(pseudonyms, on=USER_ID, how="left")
        frame = frame.filter(~F.coalesce(F.col(_ERASED), F.lit(False)))
    out: list[Column] = []
    for column in columns:
        action = policy[column]
        if action == "keep":
            out.append(_col(column))
        elif action == "pseudonymize":
            out.append(F.col("user"))
        elif action in _COARSENED:
            name, function = _COARSENED[action]
            out.append(_coarsen(function)(_col(column)).alias(name))
    return frame.select(*out, ORDER)


def _key(column: str) -> Column:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    return F.coalesce(_col(column), F.lit(_NA))


def _ladder() -> list[tuple[str, str, Callable[[Column], Column]]]:
    """The generalization steps of :func:`~recsys.privacy.anonymize.enforce_k_anonymity`, in its order."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    broad = F.create_map(*(F.lit(v) for pair in BROAD_AGE.items() for v in pair))
    return [
        ("zip3->zip1", "zip3", lambda c: F.substring(c, 1, 1)),
        ("age_band->broad", "age_band", lambda c: broad[c]),
        ("occupation->*", "occupation", lambda c: F.lit(SUPPRESSED)),
        ("zip->*", "zip3", lambda c: F.lit(SUPPRESSED)),
        ("gender->*", "gender", lambda c: F.lit(SUPPRESSED)),
    ]


def enforce_k_anonymity_spark(
    users: DataFrame, k: int, quasi_identifiers: Sequence[str] = QUASI_IDENTIFIERS
) -> tuple[DataFrame, KAnonymityReport]:
    """:func:`~recsys.privacy.anonymize.enforce_k_anonymity` with Spark: the same steps, the same
    released rows and report; group sizes are window counts, only counts reach the driver."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    columns = [c for c in quasi_identifiers if c in users.columns]
    out = users.select(*(_col(c).cast("string").alias(c) if c in columns else _col(c) for c in users.columns))

    def sized(frame: DataFrame) -> DataFrame:
        if not columns:
            return frame.withColumn(_SIZE, F.lit(None).cast("long"))
        return frame.withColumn(
            _SIZE, F.count(F.lit(1)).over(Window.partitionBy(*(_key(c) for c in columns)))
        )

    held: list[DataFrame] = []

    def hold(frame: DataFrame) -> DataFrame:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        held.append(frame)
        return frame

    try:
        out = hold(out)
        users_in = out.count()
        generalized: dict[str, int] = {}
        if columns and users_in:
            for step, column, transform in _ladder():
                if column not in columns:
                    continue
                current = hold(sized(out))
                small = F.col(_SIZE) < k
                before, after = _col(column), transform(_col(column))
                changed = F.coalesce(before, F.lit(_NA)) != F.coalesce(after, F.lit(_NA))
                n_small, n_changed = current.agg(
                    F.count(F.when(small, 1)), F.count(F.when(small & changed, 1))
                ).first()
                if not n_small:
                    break
                generalized[step] = int(n_changed)
                out = hold(current.withColumn(column, F.when(small, after).otherwise(before)).drop(_SIZE))
        final = hold(sized(out))
        if columns and users_in:
            suppressed, released_rows, smallest = final.agg(
                F.count(F.when(F.col(_SIZE) < k, 1)),
                F.count(F.when(F.col(_SIZE) >= k, 1)),
                F.min(F.when(F.col(_SIZE) >= k, F.col(_SIZE))),
            ).first()
            released = final.filter(F.col(_SIZE) >= k).drop(_SIZE)
        else:
            suppressed, released_rows, smallest = 0, users_in, None
            released = final.drop(_SIZE)
        smallest = int(smallest) if columns and released_rows and smallest is not None else 0
        # materialized before the cached steps are released
        released = released.localCheckpoint(eager=True)
    finally:
        for frame in held:
            frame.unpersist()
    report = KAnonymityReport(
        k=k,
        users_in=int(users_in),
        users_released=int(released_rows),
        users_suppressed=int(suppressed),
        generalized=generalized,
        smallest_group=smallest,
        satisfied=(not released_rows) or not columns or smallest >= k,
    )
    return released, report


@dataclass
class AnonymizedWeek:
    """The week's anonymized events and users as ordered Spark frames, with the schema each file gets."""

    events: DataFrame
    users: DataFrame
    events_schema: pa.Schema
    users_schema: pa.Schema
    events_of_erased_users: int
    k_anonymity: KAnonymityReport
    cached: list[DataFrame]

    def release(self) -> None:
        """Free what Spark cached for the week (call once the files are written)."""
        for frame in self.cached:
            frame.unpersist()


def anonymize_week_spark(
    spark: SparkSession, lake: Lake, week: date, key: bytes, erased: frozenset[str], k: int
) -> AnonymizedWeek:
    """The week's validated events and users, anonymized on Spark (see the module doc). Read inside
    :func:`recsys.io.spark_lake.nanos_as_long`."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark import StorageLevel
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    events_file = lake.data_file("validated", "events", week)
    users_file = lake.data_file("validated", "users", week)
    # the pandas path on a sample: refuses unknown columns as the pandas path does, and gives the schemas
    events_example = apply_policy(sample(events_file), EVENT_POLICY, key, "events")
    users_example, _ = enforce_k_anonymity(apply_policy(sample(users_file), USER_POLICY, key, "users"), k)
    events = read_file(spark, events_file)
    users = read_file(spark, users_file)
    ids = events.select(USER_ID).union(users.select(USER_ID)).distinct()
    pseudonyms = pseudonym_table(ids, key, erased).persist(StorageLevel.MEMORY_AND_DISK)
    dropped = 0
    if erased:
        flagged = events.join(pseudonyms.filter(F.col(_ERASED)), on=USER_ID, how="left_semi")
        dropped = flagged.count()
    events_out = apply_policy_spark(events, EVENT_POLICY, pseudonyms, "events")
    users_out = apply_policy_spark(users, USER_POLICY, pseudonyms, "users")
    released, report = enforce_k_anonymity_spark(users_out, k)
    events_out = events_out.orderBy(ORDER).drop(ORDER)
    released = released.orderBy(ORDER).drop(ORDER)
    return AnonymizedWeek(
        events=events_out,
        users=released,
        events_schema=pandas_schema(events_example, events_out),
        users_schema=pandas_schema(users_example, released),
        events_of_erased_users=int(dropped),
        k_anonymity=report,
        cached=[pseudonyms],
    )
