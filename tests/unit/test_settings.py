from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from driftline.errors import ConfigError
from driftline.settings import Settings, load_settings


def test_defaults_are_valid_and_frozen() -> None:
    s = load_settings()
    assert s.model.name == "LogisticRegression"
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen assignment
        s.log_level = "DEBUG"  # type: ignore[misc]


def test_yaml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: broker:9092\n  group_id: g1\nmodel:\n  name: GaussianNB\n")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "broker:9092" and s.model.name == "GaussianNB"
    monkeypatch.setenv("DRIFTLINE_KAFKA__GROUP_ID", "from-env")
    s2 = load_settings(cfg)
    assert s2.kafka.group_id == "from-env"
    assert s2.kafka.bootstrap_servers == "broker:9092"


def test_unknown_model_lists_valid_names(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: RandomForest\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    msg = str(info.value)
    assert "model" in msg and "RandomForest" in msg
    for valid in ("LogisticRegression", "GaussianNB", "HoeffdingAdaptiveTreeClassifier", "ARFClassifier"):
        assert valid in msg


def test_regression_models_are_checked_against_the_task(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  task: regression\n  name: GaussianNB\n")
    with pytest.raises(ConfigError, match="LinearRegression"):
        load_settings(cfg)
    cfg.write_text("model:\n  task: regression\n  name: HoeffdingAdaptiveTreeRegressor\n")
    assert load_settings(cfg).model.task == "regression"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("kafka:\n  bootstrap_server: x\n", "kafka.bootstrap_server: unknown setting"),
        ("kafka:\n  max_poll_records: 0\n", "kafka.max_poll_records"),
        ("topics:\n  input: 'bad topic!'\n", "invalid Kafka topic name"),
        ("model:\n  classes: [1]\n", "at least two distinct"),
        ("metrics:\n  port: 70000\n", "metrics.port"),
        ("- a list\n", "mapping at the top level"),
        ("kafka: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configs_name_the_setting(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert fragment in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_shipped_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "driftline.example.yaml"
    s = load_settings(example)
    assert s.model.classes == [0, 1]
    assert s.topics.dead_letter == "driftline.dead-letter"


def test_shipped_example_config_lists_every_setting() -> None:
    """deploy/driftline.example.yaml documents every setting: a new field must be added there too."""
    import yaml
    from pydantic import BaseModel

    from driftline.settings import Settings

    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "driftline.example.yaml").read_text())

    def missing(model: type[BaseModel], doc: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            if name not in doc:
                out.append(prefix + name)
                continue
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += missing(ann, doc[name] or {}, f"{prefix}{name}.")
        return out

    assert missing(Settings, example, "") == []


def test_a_policy_registered_elsewhere_is_validated_from_the_registry() -> None:
    """tests/contract/toy_policy.py registers "nudge" (imported by conftest); settings know it with no edit."""
    from driftline.settings import DriftSettings

    assert DriftSettings(policies=[{"name": "nudge", "params": {"passes": 2}}]).policies[0].name == "nudge"
    with pytest.raises(ValueError, match="nudge learns from labels and cannot act on input detections"):
        DriftSettings(policies=[{"name": "nudge", "on": "input"}])
    with pytest.raises(ValueError, match=r"unknown policy 'nudgy'; valid: background, .*nudge"):
        DriftSettings(policies=[{"name": "nudgy"}])


def test_a_poll_interval_shorter_than_the_session_timeout_is_refused() -> None:
    """librdkafka refuses it when the consumer is created; both backends refuse it when the settings load."""
    from driftline.settings import KafkaSettings

    with pytest.raises(ValueError, match=r"max_poll_interval_ms \(5000\) must be at least session_timeout_ms \(6000\)"):
        KafkaSettings(max_poll_interval_ms=5000, session_timeout_ms=6000)


@pytest.mark.parametrize(("kafka", "message"), [
    ({"exactly_once": True, "client": "kafka-python"}, "exactly_once needs kafka.client confluent"),
    ({"exactly_once": True, "acks": "1"}, "exactly_once needs acks: all"),
])
def test_exactly_once_is_refused_where_it_cannot_hold(kafka: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(kafka=kafka)


def test_the_partition_state_topic_defaults_to_a_valid_name_of_the_group() -> None:
    named = Settings(kafka={"group_id": "fraud model/v2"}).partition_state_topic
    assert named == "driftline.fraud_model_v2.partition-state"
    assert Settings(topics={"partition_state": "mine"}).partition_state_topic == "mine"


def test_sync_defaults_to_a_topic_of_the_group_and_refuses_adaptation_the_group_cannot_carry() -> None:
    s = Settings(kafka={"group_id": "fraud model/v2"}, sync={"mode": "average"})
    assert s.sync_topic == "driftline.fraud_model_v2.sync"
    assert Settings(sync={"topic": "shared.sync"}).sync_topic == "shared.sync"
    detectors = [{"name": "ADWIN"}]
    # the round carries a member's adapted model (a group decision)
    Settings(sync={"mode": "average"}, drift={"detectors": detectors, "policies": [{"name": "reset"}]})
    with pytest.raises(ValidationError, match=r"drift.policies \['adabn'\]: they adapt the backbone"):
        Settings(sync={"mode": "average"}, drift={"detectors": detectors, "policies": [{"name": "adabn"}]})
    with pytest.raises(ValidationError, match=r"sync\.mode ensemble with drift\.policies: not built yet"):
        Settings(sync={"mode": "ensemble", "key": "k" * 16},
                 drift={"detectors": detectors, "policies": [{"name": "reset"}]})
    Settings(sync={"mode": "average"}, drift={"detectors": [{"name": "ADWIN"}]})  # detectors only report
    with pytest.raises(ValidationError, match="invalid Kafka topic name"):
        Settings(sync={"topic": "a topic"})
