"""`PartnerResource`: where and as whom to call the partners, as a Dagster resource over `core.partner`."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from reporting_assets.core.connectors import ConnectorClients
from reporting_assets.core.partner import Partner, SearchConsoleClient


class PartnerResource(dg.ConfigurableResource):
    """Google Search Console v1, or the partner sandbox when `api_endpoint` points at it."""

    api_endpoint: str | None = Field(
        default=None, description="Base URL of the API; empty for Google itself, the sandbox URL offline."
    )
    credentials_file: str | None = Field(
        default=None, description="Service-account JSON key; empty: anonymous for the sandbox, ADC for Google."
    )
    num_retries: int = Field(
        default=Partner.num_retries,
        description=(
            "google-api-python-client retries of sites.list (account discovery); a report query is one call, "
            "retried by the consumer's scheduler only."
        ),
    )
    timeout_s: float = Field(default=Partner.timeout_s, description="Socket timeout of one HTTP call.")

    def partner(self) -> Partner:
        return Partner(
            api_endpoint=self.api_endpoint or None,
            credentials_file=self.credentials_file or None,
            num_retries=self.num_retries,
            timeout_s=self.timeout_s,
        )

    def validate(self) -> None:
        self.partner().validate()

    def client(self) -> SearchConsoleClient:
        """Build the Search Console client from the discovery document the package ships (no network)."""
        return self.partner().client()

    def clients(self) -> ConnectorClients:
        """Every partner's client, each built on first use: what a download worker calls."""
        return ConnectorClients(self.partner())
