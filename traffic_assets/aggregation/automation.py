"""When the automation sensor aggregates a day: after raw data of that day lands later than the
tick that last requested the day, once no run of that raw day or of the day itself is going on.

Composed from Dagster's own conditions, but not `eager()`, which loses late readings in two
ways. Its `since_last_handled` also counts a materialization of the aggregates as handled, so
readings that land while an aggregation run goes on, or between the end of that run and the
next tick, are forgotten: that run read the files before they existed. And when the trigger and
the reset come on the same tick, Dagster keeps the trigger only if both carry event times;
`any_deps_updated` drops them (it is an `and`/`or` of conditions), so the reset always wins.

Here the trigger is a bare `any_deps_match(newly_updated())` and the reset is only
`newly_requested()`, so both carry times: the raw materialization's and the requesting tick's.
The raw files are durable before their materialization is logged, so a raw update older than
the requesting tick is in the files the requested run reads, and a newer one asks for another
run. Reruns of a day replace its aggregates, so a spare run costs time, not correctness.

A raw day whose latest materialization failed a blocking check (impossible values stored) is
not aggregated until a later run of it passes: its ingestion run fails loudly, and nothing
spreads its values into aggregates and models.

Unlike `eager()`, every partition is considered, not only the latest time window (replayed 2012
days and late readings for old days matter), and a day that only becomes missing is not
requested: its aggregates need its raw data, whose arrival triggers them anyway.

"In progress" is Dagster's: a raw day is in progress from its run's plan until the next
materialization of that day, whichever run logs it. Late readings of a day stored by another
run while the day's own run goes on end that early, so the day may be aggregated alongside its
run; the run's own materialization at its end then asks for another aggregation.
"""

from dagster import AutomationCondition

RAW_UPDATED_SINCE_REQUESTED = (
    AutomationCondition.any_deps_match(AutomationCondition.newly_updated())
    .since(AutomationCondition.newly_requested())
    .with_label("raw_updated_since_last_requested")
)

RAW_FAILED_A_BLOCKING_CHECK = AutomationCondition.any_deps_match(
    AutomationCondition.any_checks_match(AutomationCondition.check_failed(), blocking_only=True)
).with_label("raw_failed_a_blocking_check")

AGGREGATE_AFTER_RAW_CHANGES = (
    RAW_UPDATED_SINCE_REQUESTED
    & ~RAW_FAILED_A_BLOCKING_CHECK
    & ~AutomationCondition.any_deps_match(AutomationCondition.executed_with_root_target())
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("aggregate_after_raw_changes")
"""`executed_with_root_target`: a run that wrote raw data and this day's aggregates together
(a backfill of both) needs no second aggregation."""
