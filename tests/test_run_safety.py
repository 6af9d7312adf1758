"""Nothing lost: one run per directory, resume only what can be resumed, corrupt checkpoints, signals, bad videos."""

import errno
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from actionclip.cli.main import main
from actionclip.engine import run_dir
from actionclip.engine.config import load_config
from actionclip.engine.run import run_training
from actionclip.engine.signals import EXIT_INTERRUPTED
from actionclip.host import files
from forked import Forked, run_ranks, start_ranks
from run_helpers import losses, overrides, write_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _train(tmp_path, config_file, *extra, new_session=False):
    """``actionclip train CONFIG_FILE EXTRA...`` in a forked process."""
    return Forked(main, ["train", str(config_file), *extra], output=tmp_path / "train", new_session=new_session)


def _wait_for_steps(run, count, process, timeout=300):
    metrics = Path(run) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if metrics.is_file() and sum('"loss"' in line for line in metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not log {count} steps (exit code {process.poll()})")


def test_a_second_run_into_a_directory_in_use_is_refused_naming_the_holder(data_root, tmp_path, capsys):
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **{"optim.epochs": 50}))
    first = _train(tmp_path, config_file)
    try:
        _wait_for_steps(tmp_path / "run", 1, first)
        assert main(["train", str(config_file), "--resume"]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: {tmp_path / 'run'} is in use by another run (pid {first.pid} on ")
        assert error.count("\n") == 1
    finally:
        first.kill()
    config_yaml = (tmp_path / "run" / "config.yaml").read_text()
    assert "epochs: 50" in config_yaml  # the refused run wrote nothing


def _hold_the_lock(directory):
    with run_dir.RunLock(directory):
        print("held", flush=True)
        time.sleep(60)


def test_a_lock_is_released_when_its_holder_dies(tmp_path):
    holder = Forked(_hold_the_lock, tmp_path / "run", output=tmp_path / "holder")
    deadline = time.time() + 60
    while holder.stdout != "held\n" and holder.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    with pytest.raises(run_dir.RunDirError, match=f"pid {holder.pid}"):
        with run_dir.RunLock(tmp_path / "run"):
            pass
    holder.kill()
    with run_dir.RunLock(tmp_path / "run"):
        assert f"pid {os.getpid()}" in (tmp_path / "run" / ".lock").read_text()


def test_resume_refuses_a_changed_schedule_and_keeps_every_config(data_root, tmp_path, capsys):
    first = overrides(data_root, tmp_path / "run", **{"optim.epochs": 2, "train.max_steps": 2})
    run_training(load_config(None, first))
    capsys.readouterr()
    config_file = write_config(tmp_path / "longer.yaml", overrides(data_root, tmp_path / "run", **{"optim.epochs": 3}))
    assert main(["train", str(config_file), "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --resume: these settings differ from") and "optim.epochs: 2 -> 3" in error
    assert "train.max_steps" not in error  # stopping at another step changes neither model nor schedule
    assert "epochs: 2" in (tmp_path / "run" / "config.yaml").read_text()
    # Harmless changes are accepted, and the history keeps both configs.
    harmless = overrides(data_root, tmp_path / "run", **{"optim.epochs": 2, "train.log_every": 3, "eval.batch_size": 4})
    run_training(load_config(None, harmless), resume=True)
    history = sorted(p.name for p in (tmp_path / "run" / "configs").iterdir())
    assert history == ["001_start.yaml", "002_resume.yaml"]
    assert "max_steps: 2" in (tmp_path / "run" / "configs" / "001_start.yaml").read_text()
    assert "log_every: 3" in (tmp_path / "run" / "config.yaml").read_text()


def test_resume_falls_back_from_a_corrupt_newest_checkpoint_and_says_so(data_root, tmp_path, capsys):
    extra = {"optim.epochs": 2, "train.save_every_steps": 2, "train.keep_last": 10}
    run_training(load_config(None, overrides(data_root, tmp_path / "whole", **extra)))
    run_training(load_config(None, overrides(data_root, tmp_path / "run", **extra, **{"train.max_steps": 6})))
    newest = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1]
    assert newest.name.endswith("step00000006.pt")
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights: torch.load alone does not notice
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    run_training(load_config(None, overrides(data_root, tmp_path / "run", **extra)), resume=True)
    err = capsys.readouterr().err
    assert f"warning: {newest} is corrupt" in err
    assert "resuming from" in err and "step00000004.pt, the newest intact checkpoint" in err
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)


def test_a_truncated_or_foreign_checkpoint_is_named_and_none_intact_is_one_error(tmp_path):
    good = tmp_path / "epoch000_step00000001.pt"
    run_dir.save_checkpoint({"model": {"w": torch.ones(3)}, "state": {"epoch": 0}}, good)
    truncated = tmp_path / "epoch000_step00000002.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(run_dir.CorruptCheckpoint, match=f"{truncated} is unreadable"):
        run_dir.load_checkpoint(truncated, torch.device("cpu"), ("model", "state"))
    with pytest.raises(run_dir.CorruptCheckpoint, match="is not a resumable checkpoint \\(no optimizer\\)"):
        run_dir.load_checkpoint(good, torch.device("cpu"), ("model", "optimizer"))
    warnings = []
    path, payload = run_dir.newest_intact_checkpoint([good, truncated], torch.device("cpu"), ("model",), warnings.append)
    assert path == good and torch.equal(payload["model"]["w"], torch.ones(3)) and len(warnings) == 2
    with pytest.raises(run_dir.RunDirError, match="no intact checkpoint among epoch000_step00000002.pt"):
        run_dir.newest_intact_checkpoint([truncated], torch.device("cpu"), ("model",), warnings.append)


def test_disk_full_while_saving_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    real_open = open
    monkeypatch.setattr(files, "open", lambda path, mode="r": real_open("/dev/full", mode), raising=False)
    with pytest.raises(OSError, match="no space left on device while writing .*step1.pt") as raised:
        run_dir.save_checkpoint({"model": {"w": torch.randn(100_000)}}, tmp_path / "step1.pt")
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signal_number, whole_group", [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGUSR1, False)])
def test_a_stop_signal_finishes_the_step_saves_and_exits_75(data_root, tmp_path, signal_number, whole_group):
    """As SLURM, a terminal's Ctrl-C (the whole process group, DataLoader workers too) or a single ``kill`` does."""
    extra = {"optim.epochs": 20, "data.workers": 2}
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **extra))
    process = _train(tmp_path, config_file, new_session=True)
    _wait_for_steps(tmp_path / "run", 2, process)
    if whole_group:
        os.killpg(process.pid, signal_number)
    else:
        process.send_signal(signal_number)
    process.wait(timeout=120)
    err = process.stderr
    name = signal.Signals(signal_number).name
    assert process.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err
    saved = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert err.strip().endswith(f"stopped by {name}; resumable checkpoint {saved[-1]} (continue with --resume)")
    state = torch.load(saved[-1], weights_only=True)["state"]
    assert state["global_step"] >= 2 and state["global_step"] == len(losses(tmp_path / "run"))


def test_training_resumed_after_sigterm_continues_the_same_run(data_root, tmp_path):
    extra = {"optim.epochs": 2}
    run_training(load_config(None, overrides(data_root, tmp_path / "whole", **extra)))
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **extra))
    process = _train(tmp_path, config_file)
    _wait_for_steps(tmp_path / "run", 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_INTERRUPTED
    assert len(losses(tmp_path / "run")) < len(losses(tmp_path / "whole"))
    assert main(["train", str(config_file), "--resume"]) == 0
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)


def _list_data(data_root, tmp_path, missing=0, corrupt=0):
    """The synthetic training videos as a list file, with ``missing`` absent and ``corrupt`` garbage files added."""
    from actionclip.data.build import dataset_samples

    samples, classes = dataset_samples(load_config(None, overrides(data_root, tmp_path)).data, "train")
    lines = [f"{s.path} {s.label}" for s in samples]
    for i in range(corrupt):
        garbage = tmp_path / f"corrupt{i}.mp4"
        garbage.write_bytes(b"not a video" * 10)
        lines.append(f"{garbage} {i % len(classes)}")
    lines += [f"{tmp_path / f'missing{i}.mp4'} 0" for i in range(missing)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    return {
        "data.format": "list",
        "data.root": "/",
        "data.train": str(tmp_path / "train.txt"),
        "data.classes": str(tmp_path / "classes.txt"),
        "data.max_bad_fraction": 0.1,
    }


def test_missing_videos_fail_before_the_first_step(data_root, tmp_path, capsys):
    data = _list_data(data_root, tmp_path, missing=5)
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **data))
    assert main(["train", str(config_file)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: 5 of 37 training videos are unreadable (more than data.max_bad_fraction=0.1)")
    assert f"{tmp_path / 'missing0.mp4'}: no such file or folder" in error
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_too_many_unreadable_videos_mid_epoch_save_first_then_stop_with_the_list(data_root, tmp_path, capsys):
    data = _list_data(data_root, tmp_path, corrupt=10)
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **data))
    assert main(["train", str(config_file)]) == 1
    error = capsys.readouterr().err
    assert "training videos are unreadable (more than data.max_bad_fraction=0.1)" in error
    assert str(tmp_path / "corrupt") in error
    saved = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))
    state = torch.load(saved[-1], weights_only=True)["state"]
    assert state["epoch"] == 0 and 1 <= state["step_in_epoch"] < 42 // 8  # mid-epoch: nothing learnt is thrown away


@pytest.mark.parametrize("case", ["output_is_a_file", "output_read_only", "resume_nothing", "demo_variant", "pretrain_json"])
def test_user_mistakes_in_train_demo_and_pretrain_are_one_line(data_root, tmp_path, capsys, case):
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run"))
    if case == "output_is_a_file":
        (tmp_path / "file").write_text("x")
        argv, expected = ["train", str(config_file), "--output", str(tmp_path / "file")], str(tmp_path / "file")
    elif case == "output_read_only":
        read_only = Path("/sys/actionclip-run") if os.geteuid() == 0 else tmp_path / "ro" / "run"
        if os.geteuid() != 0:
            read_only.parent.mkdir()
            read_only.parent.chmod(0o500)
        argv, expected = ["train", str(config_file), "--output", str(read_only)], str(read_only)
    elif case == "resume_nothing":
        argv, expected = ["train", str(config_file), "--resume"], "--resume: no checkpoint in"
    elif case == "demo_variant":
        argv, expected = ["demo", "--output", str(tmp_path / "demo"), "--variants", "actionclip_transf,nope"], "unknown variant 'nope'"
    else:
        (tmp_path / "model.json").write_text("{embed_dim: 8")
        argv = [
            "pretrain",
            str(tmp_path / "pairs.csv"),
            "--model",
            "mine",
            "--model-config",
            str(tmp_path / "model.json"),
            "--output",
            str(tmp_path / "out"),
        ]
        expected = f"{tmp_path / 'model.json'}: not valid JSON"
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected in error and error.count("\n") == 1, error


def test_under_torchrun_every_rank_saves_together_on_sigterm_and_the_run_resumes(data_root, tmp_path):
    config_file = write_config(tmp_path / "ddp.yaml", overrides(data_root, tmp_path / "ddp", **{"optim.epochs": 2, "data.batch_size": 4}))
    ranks = start_ranks(main, ["train", str(config_file)], output=tmp_path / "train")
    _wait_for_steps(tmp_path / "ddp", 2, ranks[0])
    for rank in ranks:  # as torchrun passes its SIGTERM on to every rank
        rank.send_signal(signal.SIGTERM)
    for rank in ranks:
        rank.wait(timeout=120)
    err = "".join(rank.stderr for rank in ranks)
    saved = sorted((tmp_path / "ddp" / "checkpoints").glob("*.pt"))
    assert err.count(f"stopped by SIGTERM; resumable checkpoint {saved[-1]}") == 2, err[-3000:]
    assert torch.load(saved[-1], weights_only=True)["state"]["global_step"] == len(losses(tmp_path / "ddp"))
    run_ranks(main, ["train", str(config_file), "--resume"], output=tmp_path / "resumed")
    assert len(losses(tmp_path / "ddp")) == 2 * 32 // 8


def test_resume_with_another_number_of_processes_keeps_the_global_batch_or_is_refused(data_root, tmp_path, capsys):
    extra = {"optim.epochs": 2, "eval.batch_size": 12}
    run_training(load_config(None, overrides(data_root, tmp_path / "whole", **extra)))
    run_training(load_config(None, overrides(data_root, tmp_path / "run", **extra, **{"train.max_steps": 3})))
    capsys.readouterr()
    # One process of 4 videos would halve the global batch of 8.
    halved = write_config(tmp_path / "halved.yaml", overrides(data_root, tmp_path / "run", **extra, **{"data.batch_size": 4}))
    assert main(["train", str(halved), "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --resume: the run's global batch was 8 videos, this one's is 4") and error.count("\n") == 1
    # Two processes of 4 keep it: the run continues as if nothing had changed.
    run_ranks(main, ["train", str(halved), "--resume"], output=tmp_path / "resumed")
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "whole"), abs=2e-3)
