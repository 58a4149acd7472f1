"""A 3-broker Kafka cluster (KRaft) on loopback: three `LocalKafkaBroker` nodes, each broker and controller.

The nodes form a static controller quorum (``controller.quorum.voters`` lists the three controllers)
and share one cluster id; each has its own data dir and ports:

    <data dir>/cluster.id        the id every node's log dir is formatted with
    <data dir>/node-<id>/        that node's data dir (server.properties, logs/, broker.pid, broker.log)

Internal topics get 3 replicas and min ISR 2, so the cluster keeps working with one node down.

    python -m reporting_assets.infra.kafka.cluster start|stop|status [--data-dir data/kafka-cluster] [--reset]
    python -m reporting_assets.infra.kafka.cluster kill NODE | restart NODE
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reporting_assets.infra.kafka.broker import (
    BrokerSettings,
    BrokerStartError,
    DataDirError,
    KafkaBrokerError,
    LocalKafkaBroker,
    broker_answers,
    server_properties,
)
from reporting_assets.infra.maven import MavenError, ensure_jars

T = TypeVar("T")

NODES = 3
_POLL_S = 0.2
EXIT_NOT_RUNNING = 3


@dataclass(frozen=True)
class ClusterSettings:
    host: str = "127.0.0.1"
    ports: tuple[int, ...] = (9192, 9193, 9194)  # node 1, 2, 3: the brokers
    controller_ports: tuple[int, ...] = (9195, 9196, 9197)  # node 1, 2, 3: the controllers
    data_dir: Path = Path("data/kafka-cluster")
    heap: str = "384m"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "controller_ports", tuple(self.controller_ports))
        if len(self.ports) != len(self.controller_ports) or len(self.ports) < 1:
            raise ValueError(
                f"ClusterSettings.ports and controller_ports need one port per node, "
                f"got {len(self.ports)} and {len(self.controller_ports)}"
            )
        every = [*self.ports, *self.controller_ports]
        if len(set(every)) != len(every):
            raise ValueError(f"ClusterSettings ports must all differ, got {every}")
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, len(self.ports) + 1))

    def node(self, node_id: int) -> BrokerSettings:
        index = node_id - 1
        return BrokerSettings(
            host=self.host,
            port=self.ports[index],
            controller_port=self.controller_ports[index],
            data_dir=self.data_dir / f"node-{node_id}",
            heap=self.heap,
        )

    @property
    def voters(self) -> dict[int, str]:
        """Node id -> controller ``host:port``: the static quorum every node lists."""
        return {node_id: self.node(node_id).controller_endpoint for node_id in self.node_ids}

    @property
    def bootstrap(self) -> str:
        """Every broker, comma-separated: what KAFKA_BOOTSTRAP_SERVERS should say."""
        return ",".join(self.node(node_id).bootstrap for node_id in self.node_ids)


class ClusterNode(LocalKafkaBroker):
    """One node of the cluster: its own node id and data dir, the cluster's quorum and cluster id."""

    def __init__(self, cluster: ClusterSettings, node_id: int, cluster_id_file: Path, jars_dir: Path | None) -> None:
        super().__init__(cluster.node(node_id), jars_dir=jars_dir)
        self.node_id = node_id
        self._voters = cluster.voters
        self._shared_cluster_id = cluster_id_file

    def _properties(self) -> dict[str, str]:
        return server_properties(
            self.settings, self.log_dir, node_id=self.node_id, voters=self._voters, replicas=min(len(self._voters), 3)
        )

    def _cluster_id(self, jars: Path, deadline: float) -> str:
        try:
            return self._shared_cluster_id.read_text().strip()
        except FileNotFoundError:
            raise DataDirError(f"{self._shared_cluster_id} is missing: start the whole cluster first") from None

    def _format_options(self) -> list[str]:
        return []  # the voters are in server.properties (a static quorum)


class LocalKafkaCluster:
    """Start, stop, kill and restart the nodes of a loopback cluster that owns ``settings.data_dir``."""

    def __init__(self, settings: ClusterSettings | None = None, *, jars_dir: Path | None = None) -> None:
        self.settings = settings or ClusterSettings()
        self._jars_dir = jars_dir
        self.nodes = {node_id: self._node(node_id) for node_id in self.settings.node_ids}

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def cluster_id_file(self) -> Path:
        return self.data_dir / "cluster.id"

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def node(self, node_id: int) -> ClusterNode:
        if node_id not in self.nodes:
            raise KafkaBrokerError(f"the cluster has nodes {sorted(self.nodes)}, not {node_id}")
        return self.nodes[node_id]

    def _node(self, node_id: int) -> ClusterNode:
        return ClusterNode(self.settings, node_id, self.cluster_id_file, self._jars_dir)

    def start(self, timeout_s: float = 120, *, reset: bool = False) -> str:
        """Start every node (or find them running), wait until all answer; return the bootstrap servers.

        The nodes start together: none answers before a majority of the controllers has elected a leader.
        """
        jars = self._jars_dir or ensure_jars("broker")
        self._jars_dir = jars
        self.nodes = {node_id: self._node(node_id) for node_id in self.settings.node_ids}
        if reset:
            self.stop()
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.cluster_id_file.exists():
            if any(node.log_dir.exists() for node in self.nodes.values()):
                raise DataDirError(
                    f"{self.cluster_id_file} is missing but nodes have log dirs: start with --reset / reset=True"
                )
            first = self.nodes[min(self.nodes)]
            first._prepare_data_dir()  # the tool runs in the node's data dir
            cluster_id = first._storage_tool(jars, time.monotonic() + timeout_s, "random-uuid").split()[-1]
            self.cluster_id_file.write_text(cluster_id + "\n")
        try:
            _each(lambda node: node.start(timeout_s=timeout_s), list(self.nodes.values()))
            self.wait_until_registered(timeout_s)
        except BaseException:
            self.stop()  # no half-started cluster left behind
            raise
        return self.bootstrap

    def stop(self, timeout_s: float = 30) -> list[int]:
        """Stop every node at once (one by one, the last ones would wait for a quorum that is gone)."""
        stopped = _each(lambda node: node.stop(timeout_s=timeout_s), list(self.nodes.values()))
        return [pid for pid in stopped if pid is not None]

    def kill(self, node_id: int) -> int:
        """SIGKILL one node's JVM (a crash: no controlled shutdown); returns its pid once it is gone."""
        node = self.node(node_id)
        pid = node.pid
        if pid is None:
            raise KafkaBrokerError(f"node {node_id} of the cluster in {self.data_dir} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while node.is_running():
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(f"node {node_id} (pid {pid}) survived SIGKILL")
            time.sleep(_POLL_S)
        return pid

    def restart(self, node_id: int, timeout_s: float = 90) -> str:
        """Start one node again on its data dir (the others keep the quorum); returns its bootstrap."""
        return self.node(node_id).start(timeout_s=timeout_s)

    def answering(self) -> dict[int, bool]:
        return {
            node_id: node.is_running() and broker_answers(node.settings.bootstrap)
            for node_id, node in self.nodes.items()
        }

    def registered_brokers(self) -> set[int]:
        """Node ids of the brokers the controller shows unfenced (able to lead and follow replicas)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap.split(","), client_id="reporting-assets-cluster-probe"
        )
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        return {broker["broker_id"] for broker in brokers if not broker.get("is_fenced")}

    def wait_until_registered(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        wanted = set(self.nodes)
        seen: set[int] = set()
        while True:
            with contextlib.suppress(Exception):  # not answering yet: asked again
                seen = self.registered_brokers()
                if seen >= wanted:
                    return
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"the cluster in {self.data_dir} shows brokers {sorted(seen)} unfenced, not {sorted(wanted)}, "
                    f"after {timeout_s:.0f}s (logs: {', '.join(str(n.log_file) for n in self.nodes.values())})"
                )
            time.sleep(_POLL_S)

    def status(self) -> dict[str, Any]:
        return {
            "bootstrap": self.bootstrap,
            "nodes": {node_id: node.status() for node_id, node in self.nodes.items()},
        }

    def __enter__(self) -> LocalKafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _each(call: Callable[[ClusterNode], T], nodes: Sequence[ClusterNode]) -> list[T]:
    """``call`` on every node at once; the first error is raised once all are done."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(call, node) for node in nodes]
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


# ---- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = ClusterSettings()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default=defaults.host, help="listen address (default: %(default)s)")
    common.add_argument(
        "--port", type=int, default=defaults.ports[0], help="node 1's broker port; node n: +n-1 (default: %(default)s)"
    )
    common.add_argument(
        "--controller-port",
        type=int,
        default=defaults.controller_ports[0],
        help="node 1's controller port; node n: +n-1 (default: %(default)s)",
    )
    common.add_argument("--data-dir", type=Path, default=Path("data/kafka-cluster"), help="(default: %(default)s)")
    common.add_argument("--heap", default=defaults.heap, help="JVM max heap per node (default: %(default)s)")
    parser = argparse.ArgumentParser(
        prog="python -m reporting_assets.infra.kafka.cluster", description="Run a local 3-broker Kafka cluster (KRaft)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", parents=[common], help="start the three nodes (no-op if they run)")
    start.add_argument("--timeout", type=float, default=120, help="seconds to wait (default: %(default)s)")
    start.add_argument("--reset", action="store_true", help="wipe every node's topics and offsets first")
    commands.add_parser("stop", parents=[common], help="stop every node")
    commands.add_parser("status", parents=[common], help="show which nodes run and answer")
    for name, what in (("kill", "SIGKILL one node"), ("restart", "start one node again")):
        command = commands.add_parser(name, parents=[common], help=what)
        command.add_argument("node", type=int, help="node id (1-3)")
    return parser


def _run(args: argparse.Namespace) -> int:
    settings = ClusterSettings(
        host=args.host,
        ports=tuple(args.port + i for i in range(NODES)),
        controller_ports=tuple(args.controller_port + i for i in range(NODES)),
        data_dir=args.data_dir,
        heap=args.heap,
    )
    cluster = LocalKafkaCluster(settings)
    if args.command == "start":
        bootstrap = cluster.start(timeout_s=args.timeout, reset=args.reset)
        print(f"kafka cluster running: KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        return 0
    if args.command == "stop":
        pids = cluster.stop()
        print(f"kafka cluster stopped (pids {pids})" if pids else f"kafka cluster not running ({settings.data_dir})")
        return 0
    if args.command == "kill":
        print(f"kafka node {args.node} killed (pid {cluster.kill(args.node)})")
        return 0
    if args.command == "restart":
        print(f"kafka node {args.node} running at {cluster.restart(args.node)}")
        return 0
    nodes = cluster.status()["nodes"]
    for node_id, status in nodes.items():
        state = "not running" if not status["running"] else ("answering" if status["answering"] else "NOT answering")
        print(f"node {node_id} at {status['bootstrap']}: {state}")
    return 0 if all(s["answering"] for s in nodes.values()) else EXIT_NOT_RUNNING


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    args = _parser().parse_args(argv)
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False
    try:
        return _run(args)
    except (KafkaBrokerError, MavenError, ValueError, OSError) as error:
        print(f"error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
