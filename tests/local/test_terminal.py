"""What `rlhf local run` shows on the terminal: progress bars that fit 80 columns and end
at 100 %, and stops at any moment (start-up included, two presses at once) that never
give a traceback and say truthfully whether anything will be resumed."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from rlhf_operator import cli
from rlhf_operator.local import commands, runner
from rlhf_operator.local.commands import interrupted_message, run
from rlhf_operator.local.runner import Outcome, ProgressView, format_duration, format_progress
from rlhf_operator.manifests import load_jobs

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local" / "pipeline.yaml"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _document(step: int, total: int, eta: float | None = None, **metrics: float) -> dict[str, Any]:
    progress: dict[str, Any] = {"step": step, "totalSteps": total}
    if eta is not None:
        progress["estimatedRemainingSeconds"] = eta
    return {"progress": progress, "metrics": metrics}


def test_a_bar_fits_80_columns_shows_eta_as_h_mm_ss_and_ends_at_100_percent() -> None:
    out = Terminal()
    view = ProgressView("RewardModelJob/a-rather-long-job-name-indeed", out)
    view.update(_document(1234, 100000, eta=37 * 3600 + 65, loss=0.123456))
    view.update(_document(99990, 100000, eta=3))  # the last poll before the end: 99 %
    view.finish(succeeded=True)
    frames = [frame for frame in out.getvalue().replace("\n", "\r").split("\r") if frame]
    assert all(len(frame) <= 79 for frame in frames)
    assert "ETA 37:01:05" in frames[0]
    assert frames[0].endswith("  loss=0.123")  # a shorter bar makes room for the figure
    crowded = Terminal()
    view = ProgressView("SFTJob/demo", crowded)
    view.update(_document(1234567, 10000000, eta=4000 * 3600, loss=0.123456))
    assert len(crowded.getvalue().strip("\r")) <= 79
    assert "loss" not in crowded.getvalue()  # no room even then: left out, not cut in half
    assert "99%" in frames[1]
    assert "100%" in frames[-1] and "100000/100000" in frames[-1]
    assert out.getvalue().endswith("\n")
    assert format_duration(59.6) == "0:01:00" and format_duration(-3) == "0:00:00"
    short = Terminal()
    ProgressView("SFTJob/demo", short).update(_document(120, 300, eta=65, loss=0.123456))
    assert short.getvalue().rstrip().endswith("ETA 0:01:05  loss=0.123")
    line = format_progress("SFTJob/demo", 8, 20, 0.4, 120, 300, 65)
    assert line.endswith("40% 120/300  ETA 0:01:05")


def test_a_failed_stage_stays_where_it_stopped_and_logs_get_tenths() -> None:
    failed = Terminal()
    view = ProgressView("SFTJob/demo", failed)
    view.update(_document(30, 300))
    view.finish(succeeded=False)
    assert "100%" not in failed.getvalue() and "10%" in failed.getvalue()

    log = io.StringIO()  # not a terminal (CI): a line at each tenth, no carriage returns
    view = ProgressView("SFTJob/demo", log, resuming=True)
    for step in range(150, 301, 5):
        view.update(_document(step, 300))
    view.finish(succeeded=True)
    lines = log.getvalue().splitlines()
    assert lines[0] == "SFTJob/demo: resuming from step 150"  # announced once, first
    assert sum("resuming" in line for line in lines) == 1
    assert [line.split()[2] for line in lines[1:]] == [f"{p}%" for p in range(50, 101, 10)]
    assert "\r" not in log.getvalue()


@pytest.mark.parametrize("presses", [1, 2])
def test_stops_during_start_up_give_no_traceback_and_train_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    presses: int,
) -> None:
    """Ctrl-C (once, or twice quickly) while the manifests are being checked."""
    checked = commands.check_inputs

    def pressed_while_checking(*arguments: Any) -> Any:
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)
        return checked(*arguments)

    monkeypatch.setattr(commands, "check_inputs", pressed_while_checking)
    assert run([DEMO], tmp_path, {}) == 130
    printed = capsys.readouterr()
    assert "interrupted before any stage started: nothing was trained" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert not (tmp_path / "demo-sft").exists()  # no trainer was started


def test_ctrl_c_while_rlhf_imports_gives_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any command counts presses itself (importing torch, pydantic...)."""

    def importing(arguments: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_local_run", importing)
    try:
        code = cli.main(["local", "run", str(DEMO)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while importing ended in a KeyboardInterrupt traceback")
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_press_while_a_stage_is_set_up_starts_no_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The press lands after the run checked for one and before the trainer starts: the
    trainer was once started anyway, the press forgotten, and it trained to the end."""
    rendered = runner.trainer_config

    def pressed_while_rendering(*arguments: Any, **options: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        return rendered(*arguments, **options)

    monkeypatch.setattr(runner, "trainer_config", pressed_while_rendering)
    assert run([DEMO], tmp_path, {}) == 130
    printed = capsys.readouterr().out
    assert not (tmp_path / "demo-sft" / "trainer.log").exists()
    assert "interrupted before the first checkpoint of SFTJob/demo: nothing will be resumed" in (
        printed
    )


def test_the_stop_message_says_what_will_be_resumed(tmp_path: Path) -> None:
    sft = load_jobs([DEMO])[0]
    folder = tmp_path / "demo-sft"

    def stopped() -> Outcome:
        return Outcome(sft, folder, "interrupted", 1.0, {}, 143)

    assert "nothing will be resumed" in interrupted_message(stopped())
    cut_short = folder / "checkpoints" / "checkpoint-200"
    cut_short.mkdir(parents=True)  # a save killed half way: no trainer_state.json
    assert "nothing will be resumed" in interrupted_message(stopped())
    complete = folder / "checkpoints" / "checkpoint-100"
    complete.mkdir()
    (complete / "trainer_state.json").write_text("{}")
    assert interrupted_message(stopped()) == (
        "interrupted: run the same command again to resume SFTJob/demo from step 100"
    )
    finished = Outcome(sft, folder, "succeeded", 1.0, {})
    assert "carries on with the next stage" in interrupted_message(finished)
    assert "nothing was trained" in interrupted_message(None)
