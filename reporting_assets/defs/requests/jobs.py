"""`refresh_requests`: download a date range anew (the partner revised it), from the UI's job page."""

import dagster as dg

from reporting_assets.core.keys import REFRESH_JOB, REFRESH_TAG, REQUESTS_ASSET
from reporting_assets.defs.partitions import account_date_partitions

# A UI backfill takes no run config, but tags: every run of this job carries the refresh tag, so its
# backfill (its Partitions tab, "Launch backfill" over the dates), or a backfill of report_requests
# given the tag by hand, enqueues new downloads whatever is downloaded or on its way. The previous
# downloads stay loaded and exported until the new ones are complete.
refresh_requests = dg.define_asset_job(
    REFRESH_JOB,
    selection=[REQUESTS_ASSET],
    partitions_def=account_date_partitions,
    tags={REFRESH_TAG: "true"},
    description=(
        "Enqueue new downloads of the selected (date, account) partitions, even those downloaded or on their "
        "way: for data the partner has revised. The sensors download, load and export them."
    ),
)
