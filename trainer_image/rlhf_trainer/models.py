"""Loading models and tokenizers from wherever a spec says they are.

Hub ids, claim paths, earlier jobs' outputs and the tiny preset all end in the same
``from_pretrained(path_or_id)`` call: the code real users hit with hub ids is the
code the tests run on local folders.
"""

from __future__ import annotations

import os
from typing import Any

from rlhf_operator.api import PolicyModelSource, RewardModelSource
from rlhf_operator.api.trainer_config import InputSlot, TrainerConfig, hub_token_variable

from .errors import ConfigError, load_failure
from .lifecycle import seed_everything
from .presets import tiny_model_path

ModelSource = PolicyModelSource | RewardModelSource


def resolve(source: ModelSource, slot: InputSlot, config: TrainerConfig) -> dict[str, Any]:
    """The first argument and keyword arguments for ``from_pretrained``."""
    if source.preset is not None:
        return {"pretrained_model_name_or_path": str(tiny_model_path(config.paths.cache))}
    if source.hub is not None:
        arguments: dict[str, Any] = {"pretrained_model_name_or_path": source.hub.id}
        if source.hub.revision:
            arguments["revision"] = source.hub.revision
        token = os.environ.get(hub_token_variable(slot))
        if token:
            arguments["token"] = token
        if config.paths.hub_cache:
            # The job's modelCache: a shared cache, perhaps read-only (never written then).
            arguments["cache_dir"] = config.paths.hub_cache
            if config.paths.hub_cache_read_only:
                arguments["local_files_only"] = True
        elif config.paths.cache:
            arguments["cache_dir"] = os.path.join(config.paths.cache, "hub")
        return arguments
    path = config.paths.inputs.get(slot)
    if not path:
        raise ConfigError(
            "no local path was given for this source (paths.inputs is missing it)",
            field=f"spec.{slot}",
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"{path} holds no model (config.json is missing); check the claim path or that"
            " the upstream job finished",
            field=f"spec.{slot}",
        )
    return {"pretrained_model_name_or_path": path}


def load_tokenizer(source: ModelSource, slot: InputSlot, config: TrainerConfig) -> Any:
    """The source's tokenizer, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, source, slot, config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(source: ModelSource, slot: InputSlot, config: TrainerConfig, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, source, slot, config, dtype=dtype)


def load_classifier(
    source: ModelSource,
    slot: InputSlot,
    config: TrainerConfig,
    dtype: Any,
    labels: list[str] | None,
    pad_token_id: int,
) -> Any:
    """A sequence classifier: ``labels`` names its classes, or None for one score."""
    from transformers import AutoModelForSequenceClassification

    check_head_size(source, slot, config, labels)
    arguments: dict[str, Any] = {"dtype": dtype}
    if labels:
        arguments["num_labels"] = len(labels)
        arguments["id2label"] = dict(enumerate(labels))
        arguments["label2id"] = {label: index for index, label in enumerate(labels)}
    else:
        arguments["num_labels"] = 1
    model = _load(AutoModelForSequenceClassification, source, slot, config, **arguments)
    model.config.pad_token_id = pad_token_id
    return model


def check_head_size(
    source: ModelSource, slot: InputSlot, config: TrainerConfig, labels: list[str] | None
) -> None:
    """Refuse a checkpoint whose classification head has another number of outputs.

    A base model (no head) gets a new head of the right size. A checkpoint that already
    is a sequence classifier keeps its head, so its size must match: spec.labels for a
    classifier, one score for a reward or value model. Loading would otherwise fail deep
    in transformers (size mismatch). To train a new head on such a model, start from its
    base model, as the error says.
    """
    from transformers import AutoConfig

    arguments = resolve(source, slot, config)
    try:
        found = AutoConfig.from_pretrained(**arguments)
    except (OSError, ValueError) as error:
        where = arguments["pretrained_model_name_or_path"]
        if arguments.get("local_files_only"):
            raise not_in_read_only_cache(where, arguments["cache_dir"], slot) from error
        raise ConfigError(f"cannot load {where}: {error}", field=f"spec.{slot}") from error
    size = head_size(found)
    wanted = len(labels) if labels else 1
    if size is None or size == wanted:
        return
    where = arguments["pretrained_model_name_or_path"]
    names = list((found.id2label or {}).values())
    if labels:
        raise ConfigError(
            f"spec.labels names {wanted} classes {labels}, but {where} already has a"
            f" classification head for {size} labels {names}; list those labels in"
            " spec.labels, or start from the base model (without a classification head)"
            " to train a new head",
            field="spec.labels",
        )
    raise ConfigError(
        f"{where} has a classification head with {size} outputs {names}; a reward or value"
        " model has one score: use a reward model, or a base model to train one",
        field=f"spec.{slot}",
    )


def head_size(model_config: Any) -> int | None:
    """Outputs of the checkpoint's sequence-classification head; None when it has none."""
    architectures = getattr(model_config, "architectures", None) or []
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return int(model_config.num_labels)
    return None


def _load(
    factory: Any, source: ModelSource, slot: InputSlot, config: TrainerConfig, **extra: Any
) -> Any:
    arguments = resolve(source, slot, config)
    # Whatever ran before (building the tiny preset, tokenizing) the new weights a load
    # creates (a classification or score head) start from the job's seed.
    seed_everything(config.job.spec.training.seed)
    try:
        return factory.from_pretrained(**arguments, **extra)
    except OSError as error:
        where = arguments["pretrained_model_name_or_path"]
        if arguments.get("local_files_only"):
            raise not_in_read_only_cache(where, arguments["cache_dir"], slot) from error
        raise load_failure(error, where, f"spec.{slot}") from error


def not_in_read_only_cache(model: str, cache: str, slot: InputSlot) -> ConfigError:
    return ConfigError(
        f"{model} is not in the model cache {cache} (spec.modelCache is read-only, so"
        " nothing is downloaded): download it into the claim first (HF_HOME=<that folder>"
        f" hf download {model}), or set spec.modelCache.readOnly: false",
        field=f"spec.{slot}",
    )
