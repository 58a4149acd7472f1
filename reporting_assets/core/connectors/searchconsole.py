"""Google Search Console (`searchconsole` v1, `searchanalytics.query`): the first partner.

Its client, errors and landed schema live where they always did (core/partner.py, the consumer's
`classify_http_error`, core/landing.py); this module puts them behind the connector interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from googleapiclient.errors import HttpError

from reporting_assets.core.consumer.work import classify_http_error
from reporting_assets.core.landing import page_table
from reporting_assets.core.messages import MAX_ROW_LIMIT, ReportRequest, validate_search_console_fields
from reporting_assets.core.partner import Answer, Partner, SearchConsoleClient


class SearchConsoleConnector:
    name = "searchconsole"
    max_row_limit = MAX_ROW_LIMIT
    splits_at_row_cap = True

    def validate_request(self, request: ReportRequest) -> None:
        validate_search_console_fields(request)

    def build_client(self, partner: Partner) -> SearchConsoleClient:
        return partner.client()

    def classify(self, error: HttpError) -> Exception:
        return classify_http_error(error)

    def page_table(
        self, request: ReportRequest, rows: Sequence[dict[str, Any]], provisional: bool, answer: Answer | None
    ) -> pa.Table:
        return page_table(request, rows, provisional)


CONNECTOR = SearchConsoleConnector()
