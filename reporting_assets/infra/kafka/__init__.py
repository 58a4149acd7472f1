"""A local single-node Kafka broker from Maven Central jars.

python -m reporting_assets.infra.kafka start|stop|status [--port 9092] [--data-dir data/kafka] [--reset]
"""

from reporting_assets.infra.kafka.broker import (
    BrokerSettings,
    BrokerStartError,
    DataDirError,
    KafkaBrokerError,
    LocalKafkaBroker,
    PortInUseError,
    broker_answers,
)

__all__ = [
    "BrokerSettings",
    "BrokerStartError",
    "DataDirError",
    "KafkaBrokerError",
    "LocalKafkaBroker",
    "PortInUseError",
    "broker_answers",
]
