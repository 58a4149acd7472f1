"""Spark master URLs (SPARK_MASTER): which ones Spark takes, and whether executors run in the driver.

`check_master` is the one check: the settings model runs it when the code location loads, the Spark
resource again at launch (dg.EnvVar is read then).
"""

from __future__ import annotations

import re

MASTER_VARIABLE = "SPARK_MASTER"
DEFAULT_MASTER = "local[2]"
MASTER_FORMS = "local, local[N], local[*], spark://host:port[,host:port], yarn or k8s://..."

# local, local[N], local[*], local[N,F] / local[*,F] (F task failures allowed), N, F >= 1
_LOCAL = re.compile(r"local(?:\[(?P<threads>\*|\d+)(?:,(?P<failures>\d+))?\])?")
# a host name, an IPv4 address or a bracketed IPv6 address, and a port
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>\d+)")
_K8S = re.compile(r"k8s://\S+")


def check_master(value: str) -> str:
    """`value` stripped, if Spark takes it as a master URL; else ValueError saying what is wrong
    (the caller names the variable)."""
    master = value.strip()
    local = _LOCAL.fullmatch(master)
    if local:
        for part in ("threads", "failures"):
            number = local[part]
            if number is not None and number != "*" and int(number) < 1:
                raise ValueError(f"is not a Spark master: local[...] needs at least 1 {part} ({MASTER_FORMS})")
        return master
    if master.startswith("spark://"):
        for address in master.removeprefix("spark://").split(","):
            match = _HOST_PORT.fullmatch(address)
            if match is None:
                raise ValueError(f"is not a Spark master: {address!r} is not host:port ({MASTER_FORMS})")
            if not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"is not a Spark master: port {match['port']} is not in 1..65535 ({MASTER_FORMS})")
        return master
    if master == "yarn" or _K8S.fullmatch(master):
        return master
    raise ValueError(f"is not a Spark master ({MASTER_FORMS})")


def master_error(value: str, variable: str = MASTER_VARIABLE) -> ValueError | None:
    """One line naming the variable when `value` is not a master URL, else None."""
    try:
        check_master(value)
    except ValueError as error:
        return ValueError(f"{variable}={value!r} {error}")
    return None


def is_local(master: str) -> bool:
    """Executors are threads of the driver's JVM (local mode): nothing to ship to other machines."""
    return _LOCAL.fullmatch(master.strip()) is not None
