"""The local broker with a SASL_SSL listener (and a mutual-TLS SSL one) beside its PLAINTEXT one, as a
managed Kafka is reached.

The TLS material (a CA and a broker certificate for 127.0.0.1 / localhost) is made with the
machine's ``openssl``; the SCRAM users are created with the broker's own ``StorageTool``
(``format --add-scram``) and PLAIN users are declared in the listener's JAAS line. The PLAINTEXT
listener stays for the controller, inter-broker traffic and the start-up probe.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reporting_assets.infra.kafka.broker import BrokerSettings, KafkaBrokerError, LocalKafkaBroker, PortInUseError
from reporting_assets.infra.ports import port_in_use

_SCRAM_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")  # what StorageTool's --add-scram syntax can carry unquoted


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a CA, a broker and a client certificate it signed, and the broker's PKCS12 keystore."""

    ca_cert: Path
    broker_cert: Path
    broker_key: Path
    keystore: Path
    client_cert: Path
    client_key: Path
    keystore_password: str = field(repr=False)


def make_tls_files(directory: Path, keystore_password: str, hosts: tuple[str, ...] = ("127.0.0.1",)) -> TlsFiles:
    """A throw-away CA and a broker certificate for ``hosts`` (and localhost), valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.pem"
    keystore = directory / "broker.p12"
    client_key, client_csr, client_cert = directory / "client.key", directory / "client.csr", directory / "client.pem"
    alt_names = ",".join(["DNS:localhost", *(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)])
    extensions = directory / "broker.ext"
    extensions.write_text(f"subjectAltName={alt_names}\nextendedKeyUsage=serverAuth\n")
    client_extensions = directory / "client.ext"
    client_extensions.write_text("extendedKeyUsage=clientAuth\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_cert, "-days", "2"]
        + ["-subj", "/CN=reporting-assets local CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert]
        + ["-days", "2", "-extfile", extensions],
        ["pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", ca_cert, "-name", "broker"]
        + ["-out", keystore, "-passout", "env:KEYSTORE_PASSWORD"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", client_key, "-out", client_csr, "-subj", "/CN=downloader"],
        ["x509", "-req", "-in", client_csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", client_cert]
        + ["-days", "2", "-extfile", client_extensions],
    ]
    for step in steps:
        result = subprocess.run(
            ["openssl", *map(str, step)],
            capture_output=True,
            text=True,
            env={"KEYSTORE_PASSWORD": keystore_password, "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            raise KafkaBrokerError(f"openssl {step[0]} failed: {result.stderr.strip()[-300:]}")
    return TlsFiles(ca_cert, cert, key, keystore, client_cert, client_key, keystore_password)


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener: its port, the broker's keystore, and the users (name -> password); with
    ``ssl_port``, an SSL listener beside it that wants a client certificate signed by the CA."""

    port: int
    tls: TlsFiles
    ssl_port: int | None = None
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)  # SCRAM-SHA-512 and -256
    plain_users: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, password in self.scram_users.items():
            if not (_SCRAM_SAFE.match(name) and _SCRAM_SAFE.match(password)):
                raise ValueError(f"SCRAM user {name!r}: name and password must match {_SCRAM_SAFE.pattern}")


class SecuredKafkaBroker(LocalKafkaBroker):
    """A `LocalKafkaBroker` that also listens for SASL_SSL clients on ``listener.port``."""

    def __init__(self, settings: BrokerSettings, listener: SaslSslListener, *, jars_dir: Path | None = None) -> None:
        super().__init__(settings, jars_dir=jars_dir)
        self.listener = listener

    @property
    def secured_bootstrap(self) -> str:
        return f"{self.settings.host}:{self.listener.port}"

    @property
    def mutual_tls_bootstrap(self) -> str:
        if self.listener.ssl_port is None:
            raise KafkaBrokerError("this broker has no SSL listener (SaslSslListener.ssl_port)")
        return f"{self.settings.host}:{self.listener.ssl_port}"

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        secured = f"SASL_SSL://{self.secured_bootstrap}"
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.listener.plain_users.items())
        props.update(
            {
                "listeners": f"{props['listeners']},{secured}",
                "advertised.listeners": f"{props['advertised.listeners']},{secured}",
                "listener.security.protocol.map": f"{props['listener.security.protocol.map']},SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _jaas("scram.ScramLoginModule"),
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": _jaas("scram.ScramLoginModule"),
                "listener.name.sasl_ssl.plain.sasl.jaas.config": _jaas("plain.PlainLoginModule", plain_users),
                "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.listener.tls.keystore),
                "listener.name.sasl_ssl.ssl.keystore.password": self.listener.tls.keystore_password,
                "listener.name.sasl_ssl.ssl.client.auth": "none",
            }
        )
        if self.listener.ssl_port is not None:
            mutual = f"SSL://{self.mutual_tls_bootstrap}"
            props["listeners"] += f",{mutual}"
            props["advertised.listeners"] += f",{mutual}"
            props["listener.security.protocol.map"] += ",SSL:SSL"
            tls = self.listener.tls
            props.update(
                {
                    "listener.name.ssl.ssl.keystore.type": "PKCS12",
                    "listener.name.ssl.ssl.keystore.location": str(tls.keystore),
                    "listener.name.ssl.ssl.keystore.password": tls.keystore_password,
                    # The CA's PEM file itself checks the clients' certificates.
                    "listener.name.ssl.ssl.truststore.type": "PEM",
                    "listener.name.ssl.ssl.truststore.location": str(tls.ca_cert),
                    "listener.name.ssl.ssl.client.auth": "required",
                }
            )
        return props

    def _format_options(self) -> list[str]:
        scram = [
            option
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
            for name, password in self.listener.scram_users.items()
            for option in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]
        return [*super()._format_options(), *scram]

    def _check_ports_free(self) -> None:
        super()._check_ports_free()
        for role, port in (("SASL_SSL", self.listener.port), ("SSL", self.listener.ssl_port)):
            if port is not None and port_in_use(self.settings.host, port):
                raise PortInUseError(f"port {port} on {self.settings.host} ({role} port) is in use")


def _jaas(module: str, options: str = "") -> str:
    return f"org.apache.kafka.common.security.{module} required{' ' + options if options else ''};"
