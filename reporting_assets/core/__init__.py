"""The engine under the Dagster wiring: nothing in this package imports Dagster.

Messages and the report catalog, the landing zone, keys and tag names, the Kafka and partner
clients, the consumer (`consumer/`) and the sensors' bookkeeping (`automation/`).
"""
