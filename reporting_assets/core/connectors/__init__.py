"""One connector per partner: what differs between Google's APIs, behind one interface.

The request topic, the consumer, the landing zone, downloads, sensors, checks and exports are shared;
each message names its partner (`ReportRequest.partner`) and the consumer asks that partner's
connector how to check the request, call the API, read its errors and land its rows. A third partner
is one new module here with a `CONNECTOR` and a line in `PARTNERS` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa
    from googleapiclient.errors import HttpError

    from reporting_assets.core.messages import ReportRequest
    from reporting_assets.core.partner import Answer, Partner

# Partner name on the message -> its connector's module (imported on first use: the message
# format imports this package, and a partner's client libraries are only needed where it is called).
PARTNERS = {
    "searchconsole": "reporting_assets.core.connectors.searchconsole",
    "ga4": "reporting_assets.core.connectors.ga4",
}


class PartnerClient(Protocol):
    """One partner's built API client: one page of a report per call, in exactly one HTTP call."""

    def query(self, request: ReportRequest) -> Answer: ...


class Connector(Protocol):
    name: str
    max_row_limit: int  # rows a page may ask for
    splits_at_row_cap: bool  # the partner stops serving rows past a cap (Search Console's 50 000)

    def validate_request(self, request: ReportRequest) -> None:
        """Raise InvalidRequestError for what this partner's API would refuse."""

    def build_client(self, partner: Partner) -> PartnerClient: ...

    def classify(self, error: HttpError) -> Exception:
        """The consumer's class for an error answer: PartnerAuthError, QuotaExhausted, Retry or Failure."""

    def page_table(
        self, request: ReportRequest, rows: Sequence[dict[str, Any]], provisional: bool, answer: Answer | None
    ) -> pa.Table:
        """The landed Parquet table of one page (its schema is the partner's)."""


def connector_for(name: object) -> Connector:
    """The connector of a partner named on a message; InvalidRequestError for a partner nobody connects to."""
    from reporting_assets.core.messages import InvalidRequestError

    module = PARTNERS.get(name) if isinstance(name, str) else None
    if module is None:
        raise InvalidRequestError(f"unknown partner {name!r} (known: {', '.join(PARTNERS)})")
    return importlib.import_module(module).CONNECTOR


class ConnectorClients:
    """Each partner's client, built on first use. Not thread-safe (httplib2): one per worker thread."""

    def __init__(self, partner: Partner) -> None:
        self._partner = partner
        self._clients: dict[str, PartnerClient] = {}

    def query(self, request: ReportRequest) -> Answer:
        client = self._clients.get(request.partner)
        if client is None:
            client = self._clients[request.partner] = connector_for(request.partner).build_client(self._partner)
        return client.query(request)
