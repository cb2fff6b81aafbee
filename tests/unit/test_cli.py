from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftline import __version__
from driftline.cli import build_parser, main

COMMANDS = ["run", "produce", "pretrain", "replay", "demo", "checkpoint", "broker"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"driftline {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: driftline {command}")


def test_help_lists_every_command() -> None:
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def test_installed_entry_point() -> None:
    exe = Path(sys.executable).with_name("driftline")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"driftline {__version__}"


def test_bad_config_is_exit_2_with_the_setting_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: NoSuchModel\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "NoSuchModel" in err and "HoeffdingAdaptiveTreeClassifier" in err


def test_bad_model_param_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: GaussianNB\n  params:\n    learning_rate: 0.1\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "model.params.learning_rate" in capsys.readouterr().err


def test_produce_unknown_generator_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--generator", "Nope", "--bootstrap-servers", "127.0.0.1:1", "--limit", "1"]) == 2
    assert "Agrawal" in capsys.readouterr().err


def test_command_line_overrides_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--metrics-port", "70000"]) == 2
    assert "metrics.port" in capsys.readouterr().err


def test_checkpoint_list_and_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.learners.checkpoint import DirectoryStore

    store = DirectoryStore(tmp_path / "ck", keep=5)
    for n in (100, 200, 300):
        store.save({"n": n}, {"events": {0: n}}, learned=n)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"checkpoint:\n  directory: {tmp_path / 'ck'}\n")
    assert main(["checkpoint", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["version", "created"]
    assert [line.split()[0] for line in out[1:]] == ["1", "2", "3"]
    assert "events[0]=200" in out[2]
    assert main(["checkpoint", "rollback", "2", "--dir", str(tmp_path / "ck")]) == 0
    assert "checkpoint 2 (200 events learned) is now the newest" in capsys.readouterr().out
    assert [i.version for i in store.list()] == [1, 2]
    assert main(["checkpoint", "rollback", "9", "--dir", str(tmp_path / "ck")]) == 2
    assert "no checkpoint version 9" in capsys.readouterr().err
    assert main(["checkpoint", "list", "--config", str(tmp_path / "c.yaml")]) == 0
    cfg.write_text("log_level: INFO\n")
    assert main(["checkpoint", "list", "--config", str(cfg)]) == 2
    assert "checkpoint.directory is not set" in capsys.readouterr().err


def test_run_with_a_missing_backbone_file_fails_before_consuming(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    missing = tmp_path / "weights" / "encoder.pt"
    cfg.write_text(
        "kafka: {bootstrap_servers: '127.0.0.1:1'}\n"  # nothing listens: the model must fail first
        f"model: {{name: TorchLinear, backbone: {{kind: torch, path: '{missing}', class_path: 'x:Y', "
        "features: [a]}}\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.backbone.path" in err and str(missing) in err and "does not exist" in err


def test_errors_a_restart_can_fix_exit_1_and_configuration_errors_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    import argparse

    from driftline import cli
    from driftline.errors import PublishError

    assert cli.main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2  # ConfigError: fix it first

    def failing(args: argparse.Namespace) -> int:
        raise PublishError("outputs were not delivered")

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.set_defaults(func=failing)
        return p
    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 1  # the unit restarts it; the batch is consumed again
