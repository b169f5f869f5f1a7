"""Bad input ends with a distinct exit code and one line naming the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rlhf_trainer.errors import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR
from rlhf_trainer.lifecycle import run_stage
from rlhf_trainer.reward import train as train_reward
from rlhf_trainer.sft import train as train_sft

from tests.trainer.conftest import CPU, job_manifest

TRAINING = {"maxSteps": 2, "batchSize": 4, "maxLength": 32}


def _pvc_sft(extra: dict | None = None) -> dict:
    spec = {
        **CPU,
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "sft.jsonl"}},
        "training": TRAINING,
        "generation": {"samples": 0},
    }
    spec.update(extra or {})
    return job_manifest("SFTJob", "bad", spec)


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run(stage, write_config, manifest, inputs, capsys) -> tuple[int, str, dict]:
    config, _ = write_config(manifest, inputs)
    code = run_stage(stage, config, train_sft if stage == "sft" else train_reward)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    termination = json.loads(config.with_name("run.termination").read_text())
    return code, error, termination


def test_missing_column_names_the_file_and_the_column(write_config, tmp_path, capsys) -> None:
    data = _write_rows(tmp_path / "sft.jsonl", [{"prompt": "hi", "answer": "there"}] * 4)
    manifest = _pvc_sft(
        {
            "dataset": {
                "pvc": {"claimName": "data", "path": "sft.jsonl"},
                "format": "prompt-completion",
            }
        }
    )
    code, error, termination = _run("sft", write_config, manifest, {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert error.startswith("rlhf-trainer: error: ")
    assert str(data) in error and "'completion'" in error and "dataset.columns" in error
    assert termination == {"phase": "Failed", "reason": "DataError", "message": error[21:]}


def test_column_mapping_fixes_that_same_file(write_config, tmp_path, capsys) -> None:
    data = _write_rows(tmp_path / "sft.jsonl", [{"prompt": "hi", "answer": " there"}] * 8)
    manifest = _pvc_sft(
        {
            "dataset": {
                "pvc": {"claimName": "data", "path": "sft.jsonl"},
                "columns": {"completion": "answer"},
            }
        }
    )
    config, _ = write_config(manifest, {"dataset": str(data)})
    assert run_stage("sft", config, train_sft) == 0


def test_empty_file_is_a_data_error(write_config, tmp_path, capsys) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("")
    code, error, _ = _run("sft", write_config, _pvc_sft(), {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR and str(data) in error


def test_missing_file_is_a_data_error(write_config, tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere" / "sft.jsonl"
    code, error, _ = _run("sft", write_config, _pvc_sft(), {"dataset": str(missing)}, capsys)
    assert code == EXIT_DATA_ERROR and "no such file or folder" in error and str(missing) in error


def test_unknown_label_names_the_row_and_the_label_set(write_config, tmp_path, capsys) -> None:
    rows = [{"text": "fine", "label": "positive"}] * 3 + [{"text": "meh", "label": "neutral"}]
    data = _write_rows(tmp_path / "sft.jsonl", rows)
    manifest = _pvc_sft({"task": "sequence-classification", "labels": ["negative", "positive"]})
    code, error, _ = _run("sft", write_config, manifest, {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert "row 4 has label 'neutral'" in error and "['negative', 'positive']" in error
    assert str(data) in error and ": label:" in error


def test_unrecognisable_reward_data_names_the_formats(write_config, tmp_path, capsys) -> None:
    data = _write_rows(tmp_path / "prefs.jsonl", [{"good": "a", "bad": "b"}] * 3)
    manifest = job_manifest(
        "RewardModelJob",
        "bad",
        {
            **CPU,
            "model": {"preset": "tiny"},
            "dataset": {"pvc": {"claimName": "data", "path": "prefs.jsonl"}},
            "training": TRAINING,
        },
    )
    code, error, _ = _run("rm", write_config, manifest, {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert "chosen+rejected or responses or score" in error and "set dataset.format" in error


def test_model_folder_without_a_model_is_a_config_error(write_config, tmp_path, capsys) -> None:
    manifest = _pvc_sft({"model": {"fromJob": {"name": "upstream"}}, "dataset": {"preset": "tiny"}})
    code, error, _ = _run("sft", write_config, manifest, {"model": str(tmp_path)}, capsys)
    assert code == EXIT_CONFIG_ERROR
    assert "spec.model" in error and "config.json is missing" in error


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{not json", "not JSON"), (json.dumps({"job": {"kind": "SFTJob"}}), "job.SFTJob.metadata")],
)
def test_bad_config_file_exits_with_the_config_code(tmp_path, content, fragment) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "rlhf_trainer", "sft", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == EXIT_CONFIG_ERROR
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rlhf-trainer: error: {path}: ") and fragment in last


def test_config_for_another_stage_is_refused(write_config, capsys) -> None:
    manifest = _pvc_sft({"dataset": {"preset": "tiny"}})
    config, _ = write_config(manifest)
    assert run_stage("rm", config, train_reward) == EXIT_CONFIG_ERROR
    assert "stage rm runs RewardModelJob, but the config holds a SFTJob" in capsys.readouterr().err


# --- conversational data and chat templates --------------------------------------------

USER = {"role": "user", "content": "Review of the park:"}
ANSWER = {"role": "assistant", "content": " the park was fun and lovely."}
GOOD_CHAT = {"messages": [USER, ANSWER]}


@pytest.mark.parametrize(
    ("bad_row", "column", "words"),
    [
        ({"messages": ["Review of the park:", "the park was fun."]}, "messages", "list of str"),
        ({"messages": []}, "messages", "empty list"),
        ({"messages": [{"content": "Review of the park:"}, ANSWER]}, "messages", "'role'"),
        ({"messages": [USER, {"role": "assistant"}]}, "messages", "'content'"),
        ({"messages": [USER]}, "messages", "no assistant turn"),
    ],
)
def test_bad_conversations_name_file_column_and_row(
    write_config, tmp_path, capsys, bad_row, column, words
) -> None:
    data = _write_rows(tmp_path / "sft.jsonl", [GOOD_CHAT, GOOD_CHAT, bad_row])
    code, error, termination = _run("sft", write_config, _pvc_sft(), {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert f"{data}: {column}: row 3 " in error and words in error
    assert termination["reason"] == "DataError"


def test_prompt_and_completion_of_different_shapes_are_refused(
    write_config, tmp_path, capsys
) -> None:
    rows = [{"prompt": [USER], "completion": [ANSWER]}, {"prompt": [USER], "completion": "fun."}]
    data = _write_rows(tmp_path / "sft.jsonl", rows)
    code, error, _ = _run("sft", write_config, _pvc_sft(), {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert f"{data}: completion: row 2 holds a string but row 1 holds a list of messages" in error


def test_preference_answer_that_is_a_mapping_is_refused(write_config, tmp_path, capsys) -> None:
    rows = [
        {"chosen": [USER, ANSWER], "rejected": [USER, ANSWER]},
        {"chosen": ANSWER, "rejected": "x"},
    ]
    data = _write_rows(tmp_path / "prefs.jsonl", rows)
    manifest = job_manifest(
        "RewardModelJob",
        "bad",
        {
            **CPU,
            "model": {"preset": "tiny"},
            "dataset": {"pvc": {"claimName": "data", "path": "prefs.jsonl"}},
            "training": TRAINING,
        },
    )
    code, error, _ = _run("rm", write_config, manifest, {"dataset": str(data)}, capsys)
    assert code == EXIT_DATA_ERROR
    assert f"{data}: chosen: row 2 holds a single mapping" in error


def _tiny_model_with_template(preset_cache: Path, folder: Path, template: str | None) -> Path:
    """A copy of the tiny model whose tokenizer has another chat template (or none)."""
    import shutil

    from rlhf_trainer.presets import tiny_model_path

    shutil.copytree(tiny_model_path(str(preset_cache)), folder)
    (folder / "chat_template.jinja").unlink()
    if template is not None:
        (folder / "chat_template.jinja").write_text(template)
    return folder


def test_conversations_for_a_model_without_chat_template_are_a_config_error(
    write_config, tmp_path, preset_cache, capsys
) -> None:
    model = _tiny_model_with_template(preset_cache, tmp_path / "base-model", None)
    data = _write_rows(tmp_path / "sft.jsonl", [GOOD_CHAT] * 4)
    manifest = _pvc_sft({"model": {"pvc": {"claimName": "models", "path": "base"}}})
    inputs = {"dataset": str(data), "model": str(model)}
    code, error, termination = _run("sft", write_config, manifest, inputs, capsys)
    assert code == EXIT_CONFIG_ERROR
    assert "spec.model: the tokenizer has no chat template" in error and "plain-text" in error
    assert termination["reason"] == "ConfigError"


# Mistral's rule, as its template writes it: user and assistant turns alternate.
STRICT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def test_conversation_a_strict_template_refuses_names_the_row(
    write_config, tmp_path, preset_cache, capsys
) -> None:
    model = _tiny_model_with_template(preset_cache, tmp_path / "strict-model", STRICT_TEMPLATE)
    user_user = {"messages": [USER, USER, ANSWER]}
    data = _write_rows(tmp_path / "sft.jsonl", [GOOD_CHAT] * 3 + [user_user])
    manifest = _pvc_sft(
        {"model": {"pvc": {"claimName": "models", "path": "strict"}}, "completionOnlyLoss": False}
    )
    inputs = {"dataset": str(data), "model": str(model)}
    code, error, _ = _run("sft", write_config, manifest, inputs, capsys)
    assert code == EXIT_DATA_ERROR
    assert f"{data}: messages: row 4 is refused by the model's chat template" in error
    assert "must alternate" in error


# --- transient failures are not configuration errors ------------------------------------


def test_network_failures_are_told_apart_from_user_errors() -> None:
    from rlhf_trainer.errors import ConfigError, TransientError, is_network_failure, load_failure

    def raised(error: BaseException, cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise error from inner
        except BaseException as outer:
            return outer

    class ConnectError(Exception):  # the shape of httpx's, by name
        pass

    offline = raised(OSError("We couldn't connect to the Hub"), ConnectionRefusedError(111))
    assert is_network_failure(offline)
    assert is_network_failure(raised(OSError("x"), ConnectError("refused")))
    assert not is_network_failure(raised(OSError("no config.json"), FileNotFoundError("x")))
    assert isinstance(load_failure(offline, "org/model", "spec.model"), TransientError)
    missing = load_failure(OSError("org/model is not a valid model id"), "org/model", "spec.model")
    assert isinstance(missing, ConfigError)


def test_an_unreachable_hub_exits_75_to_be_retried(write_config, monkeypatch) -> None:
    """Offline, a hub model used to exit 78 ("bad config"), which fails the Job at once."""
    import huggingface_hub.constants
    import huggingface_hub.utils._http as hub_http
    from rlhf_trainer.errors import EXIT_TEMPORARY_FAILURE

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)  # no backoff waits
    spec = {
        **CPU,
        "model": {"hub": {"id": "example-org/unreachable"}},
        "dataset": {"preset": "tiny"},
    }
    config, _ = write_config(job_manifest("SFTJob", "offline", spec))
    assert run_stage("sft", config, train_sft) == EXIT_TEMPORARY_FAILURE
    termination = json.loads(config.with_name("run.termination").read_text())
    assert termination["reason"] == "TransientError"
    assert "cannot reach the Hub" in termination["message"]
