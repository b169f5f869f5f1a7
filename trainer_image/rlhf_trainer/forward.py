"""Forward passes over (prompt + response) batches: the log-probabilities of the sampled
tokens under a causal LM, and the value model's value of every state. Used by the phases
that score a rollout (policy and reference log-probabilities, values) and by the update."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn
from trl.trainer.utils import selective_log_softmax


def backbone(model: nn.Module) -> nn.Module:
    """The transformer under a ...ForSequenceClassification head (``model.model`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded prompt starts at 0 exactly as
    in ``generate`` (padding positions get 0; they are masked anyway)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def response_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_width: int,
    logits_to_keep: bool,
) -> torch.Tensor:
    """Logits predicting each response token (those at the positions just before it).

    With ``logits_to_keep`` the LM head runs on the response positions only, which saves a
    (prompt length x vocabulary) logits tensor per sample.
    """
    kwargs = {"logits_to_keep": response_width + 1} if logits_to_keep else {}
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
        **kwargs,
    )
    return output.logits[:, -(response_width + 1) : -1]


def per_token_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """A sequence-classification model's scalar head applied at every position (batch, length):
    the value model's value of every state. (The reward is not read this way: see
    ``scoring.py``; a reward model is scored by its own forward and pooling.)"""
    hidden = backbone(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        use_cache=False,
    ).last_hidden_state
    return model.score(hidden).squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities of the sampled tokens under the *tempered* distribution, which is the
    one sampled from (TRL divides by temperature + 1e-7 likewise)."""
    return selective_log_softmax(logits.float() / (temperature + 1e-7), tokens)


# (logits predicting each response token, values of the states before them or None)
ModelOutput = tuple[torch.Tensor, torch.Tensor | None]


@torch.no_grad()
def logprobs_in_chunks(
    forward: Callable[[torch.Tensor, torch.Tensor, int], ModelOutput],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    responses: torch.Tensor,
    chunk: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of ``responses`` (and the values, when ``forward`` gives them) over
    (prompt + response) rows, ``chunk`` rows per forward pass to bound memory."""
    logprobs, values = [], []
    width = responses.size(1)
    for start in range(0, input_ids.size(0), chunk):
        rows = slice(start, start + chunk)
        logits, chunk_values = forward(input_ids[rows], attention_mask[rows], width)
        logprobs.append(token_logprobs(logits, responses[rows], temperature))
        if chunk_values is not None:
            values.append(chunk_values.float())
        del logits
    return torch.cat(logprobs), (torch.cat(values) if values else None)


def check_value_model(value_model: nn.Module) -> None:
    prefix = str(getattr(value_model, "base_model_prefix", ""))
    if not hasattr(value_model, "score") or not prefix or not hasattr(value_model, prefix):
        raise ValueError(
            "value_model must be an AutoModelForSequenceClassification-style model with a "
            "`score` head over a backbone named by `base_model_prefix`"
        )


class PolicyAndValue(nn.Module):
    """Policy and (with gae) value model as one module, so one ``accelerator.prepare`` (one DDP
    wrapper, one gradient all-reduce) and one optimizer cover both (as TRL's
    PolicyAndValueWrapper). The estimators without a critic have no value model here: nothing
    of it is loaded, trained or saved."""

    def __init__(self, policy: nn.Module, value_model: nn.Module | None) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.policy_accepts_logits_to_keep = accepts_logits_to_keep(policy)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (logits predicting each response token, value of the state before each
        response token, or None without a value model)."""
        logits = response_logits(
            self.policy,
            input_ids,
            attention_mask,
            response_width,
            self.policy_accepts_logits_to_keep,
        )
        if self.value_model is None:
            return logits, None
        values = per_token_scores(self.value_model, input_ids, attention_mask)
        return logits, values[:, -(response_width + 1) : -1]
