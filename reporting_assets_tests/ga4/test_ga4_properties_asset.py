"""The `ga4_properties` asset on a real Dagster instance: GA4's properties become `property` partitions."""

from __future__ import annotations

import dagster as dg

from reporting_assets.core.keys import GA4_PROPERTIES_ASSET
from reporting_assets.definitions import defs
from reporting_assets.defs.accounts.ga4 import ga4_properties
from reporting_assets.defs.partitions import property_partitions
from reporting_assets.resources.partner import PartnerResource
from reporting_assets.resources.warehouse import WarehouseResource
from reporting_assets.sandbox import PropertySpec, SandboxConfig, SandboxServer, SiteSpec

PROPERTIES = [PropertySpec(str(100000 + n), str(1000 + n), f"Site {n}", rows_per_day=5) for n in range(230)]


def test_properties_over_every_page_become_partitions_and_a_second_run_adds_none(tmp_path):
    resources = {"warehouse": WarehouseResource(data_dir=str(tmp_path / "data"))}
    with (
        SandboxServer(
            SandboxConfig(seed=1, sites=[SiteSpec("sc-domain:example.com", 10)], ga4_properties=PROPERTIES)
        ) as sandbox,
        dg.instance_for_test() as instance,
    ):
        resources["partner"] = PartnerResource(api_endpoint=sandbox.url)
        first = dg.materialize([ga4_properties], resources=resources, instance=instance)
        assert first.success
        names = sorted(f"properties/{p.id}" for p in PROPERTIES)
        assert sorted(instance.get_dynamic_partitions(property_partitions.name)) == names
        metadata = first.asset_materializations_for_node(GA4_PROPERTIES_ASSET)[0].metadata
        assert metadata["properties"].value == 230 and metadata["new_partitions"].value == 230
        # accountSummaries.list pages of at most 200 accounts: two calls for 230.
        assert sandbox.stats()["calls_by_method"]["ga4.accountSummaries.list"] == 2

        sandbox.update_config(ga4_properties=PROPERTIES[:-1])
        second = dg.materialize([ga4_properties], resources=resources, instance=instance)
        metadata = second.asset_materializations_for_node(GA4_PROPERTIES_ASSET)[0].metadata
        assert metadata["new_partitions"].value == 0
        assert metadata["no_longer_listed"].value == [f"properties/{PROPERTIES[-1].id}"]
    with resources["warehouse"].connect() as db:
        assert db.execute("SELECT count(*) FROM ga4_properties").fetchone() == (230,)


def test_the_code_location_has_the_properties_asset():
    assert defs().resolve_assets_def(GA4_PROPERTIES_ASSET).partitions_def is None
