"""Local infrastructure: jars from Maven Central, a local Kafka broker, free ports."""
