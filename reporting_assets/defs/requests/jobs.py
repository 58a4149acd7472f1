"""`refresh_requests`: download a date range anew (the partner revised it), from the UI's job page."""

import dagster as dg

from reporting_assets.core.keys import REFRESH_JOB, REQUESTS_ASSET
from reporting_assets.defs.partitions import account_date_partitions

# A UI backfill of report_requests takes no run config; this job's backfill (its Partitions tab,
# "Launch backfill" over the dates) enqueues new downloads whatever is downloaded or on its way.
# The previous downloads stay loaded and exported until the new ones are complete.
refresh_requests = dg.define_asset_job(
    REFRESH_JOB,
    selection=[REQUESTS_ASSET],
    partitions_def=account_date_partitions,
    config={"ops": {REQUESTS_ASSET: {"config": {"refresh": True}}}},
    description=(
        "Enqueue new downloads of the selected (date, account) partitions, even those downloaded or on their "
        "way: for data the partner has revised. The sensors download, load and export them."
    ),
)
