"""How the Kafka service lays out N nodes (ports, folders, one quorum) and how its topics are
replicated, without starting a broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.stack.kafka import KafkaBroker, kafka_uuid
from infra.stack.local import LocalStack, kafka_layout_dir, running_cluster_size
from traffic_core.kafka.topics import Replication


@settings(derandomize=True, deadline=None, max_examples=60)
@given(st.integers(min_value=1, max_value=64))
def test_replication_survives_one_lost_broker_from_three_on(brokers: int) -> None:
    replication = Replication.for_brokers(brokers)
    assert 1 <= replication.min_insync <= replication.factor <= min(brokers, 3)
    if brokers >= 3:
        # One broker down still leaves enough copies in sync for acks=all, and a write
        # acknowledged by min_insync copies survives the loss of any one of them.
        assert replication.factor - 1 >= replication.min_insync >= 2
    else:
        assert replication.factor == brokers and replication.min_insync == 1


def test_one_broker_keeps_its_folder_and_ports(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path, tmp_path / "libs")
    (node,) = broker.nodes
    assert (node.node_id, node.state_dir, node.port, node.controller_port) == (
        1,
        tmp_path,
        9092,
        9093,
    )
    assert broker.bootstrap_servers == "127.0.0.1:9092"
    assert broker.replication == Replication(1, 1)


def test_three_brokers_have_ports_and_folders_of_their_own(tmp_path: Path) -> None:
    cluster = KafkaBroker(tmp_path, tmp_path / "libs", port=19096, controller_port=19097, brokers=3)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 19096, 19097),
        (2, 19098, 19099),
        (3, 19100, 19101),
    ]
    assert [n.state_dir for n in cluster.nodes] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    assert cluster.bootstrap_servers == "127.0.0.1:19096,127.0.0.1:19098,127.0.0.1:19100"
    assert cluster.replication == Replication(3, 2)


def test_nodes_that_would_share_a_port_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="share a port"):
        KafkaBroker(tmp_path, tmp_path, port=9092, controller_port=9094, brokers=2)
    with pytest.raises(ValueError, match="share a port"):
        KafkaBroker(tmp_path, tmp_path, brokers=0)


def properties(path: Path) -> dict[str, str]:
    lines = (line for line in path.read_text().splitlines() if "=" in line)
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def test_every_node_is_configured_into_one_quorum_replicated_as_the_count_asks(
    tmp_path: Path,
) -> None:
    cluster = KafkaBroker(tmp_path, tmp_path / "libs", brokers=3)
    rendered = []
    for node in cluster.nodes:
        node.state_dir.mkdir(parents=True)
        rendered.append(properties(cluster._render_config(node)))
    quorum = "127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097"
    for node, config in zip(cluster.nodes, rendered, strict=True):
        assert config["node.id"] == str(node.node_id)
        assert config["controller.quorum.bootstrap.servers"] == quorum
        assert config["log.dirs"] == str(node.state_dir / "data")
        assert f"PLAINTEXT://127.0.0.1:{node.port}" in config["advertised.listeners"]
        assert config["default.replication.factor"] == "3"
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"

    single = KafkaBroker(tmp_path / "single", tmp_path / "libs")
    single.state_dir.mkdir()
    config = properties(single._render_config(single.nodes[0]))
    assert config["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert config["offsets.topic.replication.factor"] == config["min.insync.replicas"] == "1"


def test_kafka_ids_are_what_the_storage_tool_accepts() -> None:
    ids = {kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_the_stack_keeps_a_cluster_apart_from_the_one_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAFFIC_SECURITY", raising=False)
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    assert LocalStack.from_env(tmp_path).kafka.state_dir == tmp_path / "kafka" / "broker"
    cluster = LocalStack.from_env(tmp_path, brokers=3).kafka
    assert (
        cluster.state_dir
        == tmp_path / "kafka" / kafka_layout_dir(3)
        == tmp_path / "kafka" / ("cluster-3")
    )
    assert cluster.brokers == 3 and len(cluster.bootstrap_servers.split(",")) == 3
    monkeypatch.setenv("KAFKA_BROKERS", "3")
    assert LocalStack.from_env(tmp_path).kafka.brokers == 3
    assert running_cluster_size(tmp_path) == 0, "nothing runs"
