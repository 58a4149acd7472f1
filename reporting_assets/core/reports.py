"""The reports this code location knows how to download: name -> Search Console query shape."""

from __future__ import annotations

from dataclasses import dataclass

from reporting_assets.core.messages import ReportRequest


class UnknownReportError(ValueError):
    pass


@dataclass(frozen=True)
class ReportSpec:
    name: str
    dimensions: tuple[str, ...]
    search_type: str = "web"
    description: str = ""

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Dimension columns of the landed table; `date` is its own column already."""
        return tuple(d for d in self.dimensions if d != "date")

    def first_request(self, account: str, date: str, row_limit: int, data_state: str = "final") -> ReportRequest:
        return ReportRequest(
            report=self.name,
            account=account,
            date=date,
            dimensions=self.dimensions,
            search_type=self.search_type,
            data_state=data_state,
            row_limit=row_limit,
            start_row=0,
        )


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "search_analytics",
            ("date", "query", "page", "country", "device"),
            description="Clicks, impressions, CTR and position by query, page, country and device.",
        ),
        ReportSpec(
            "search_by_country",
            ("date", "country", "device"),
            description="Clicks, impressions, CTR and position by country and device.",
        ),
    )
}
DEFAULT_REPORTS = ("search_analytics",)


def get_report(name: str) -> ReportSpec:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReportError(f"unknown report {name!r} (known: {', '.join(sorted(REPORTS))})") from None
