"""The generation phase of an RL update: which prompts a process answers at each update (each
repeated ``samples_per_prompt`` times, the copies side by side), and sampling responses from
the policy. Also the records the phases hand each other: ``Generation`` (what was sampled) and
``Rollout`` (everything the update needs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig
from trl.trainer.utils import pad

# --------------------------------------------------------------------------------------
# Stop tokens
# --------------------------------------------------------------------------------------


def first_true_indices(flags: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row of a 2-D bool tensor (the row length if none)."""
    row_length = flags.size(-1)
    positions = torch.arange(row_length, device=flags.device)
    return torch.where(flags, positions, row_length).min(dim=-1).values


def is_stop_token(tokens: torch.Tensor, stop_token_ids: int | list[int]) -> torch.Tensor:
    """True where a token is one of the stop tokens."""
    ids = [stop_token_ids] if isinstance(stop_token_ids, int) else list(stop_token_ids)
    return torch.isin(tokens, torch.tensor(ids, dtype=tokens.dtype, device=tokens.device))


def truncate_after_stop_token(
    responses: torch.Tensor, stop_token_id: int | list[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every token after the first stop token (any of ``stop_token_id``) with padding.

    Returns ``(truncated responses, mask)``; the mask is True up to and including the stop
    token (a response without one keeps all its tokens). The mask, not the pad id, is what
    marks a response's end afterwards: when the tokenizer pads with its EOS token, a real
    EOS and padding look the same.
    """
    stop_index = first_true_indices(is_stop_token(responses, stop_token_id))
    positions = torch.arange(responses.size(1), device=responses.device)
    mask = positions.unsqueeze(0) <= stop_index.unsqueeze(1)
    return responses.masked_fill(~mask, pad_token_id), mask


def left_padded(
    prompts: list[list[int]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded batch: generation appends to the right, so every prompt must
    end at the same column."""
    ids = [torch.tensor(prompt, dtype=torch.long) for prompt in prompts]
    input_ids = pad(ids, padding_value=pad_token_id, padding_side="left").to(device)
    attention_mask = pad(
        [torch.ones_like(t) for t in ids], padding_value=0, padding_side="left"
    ).to(device)
    return input_ids, attention_mask


# --------------------------------------------------------------------------------------
# Records passed between phases
# --------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One rollout's sampled responses (output of the generation phase)."""

    prompt_indices: list[int]  # into the training prompts, one per response
    prompt_ids: torch.Tensor  # (responses, prompt width), left-padded
    prompt_mask: torch.Tensor
    responses: torch.Tensor  # (responses, response width), padded after the first stop token
    response_mask: torch.Tensor  # True on real response tokens (the stop token included)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.responses], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask.long()], dim=1)


@dataclass
class Rollout:
    """One update's batch: sampled responses and everything computed from them before
    optimising."""

    input_ids: torch.Tensor  # (batch, prompt + response), prompt left-padded, response right-padded
    attention_mask: torch.Tensor  # 1 on real prompt and response tokens
    responses: torch.Tensor  # (batch, response width), padded after the first stop token
    response_mask: torch.Tensor  # True on real response tokens (stop token included)
    logprobs: torch.Tensor  # policy log-probabilities at sampling time
    reference_logprobs: torch.Tensor
    values: torch.Tensor | None  # the value model's (gae only)
    scores: torch.Tensor  # (batch,) reward-model score, after missing_eos_penalty
    kl: torch.Tensor
    non_score_rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor | None  # the value model's targets (gae only)
    ends_with_eos: torch.Tensor  # (batch,) bool: ends with a stop token
    zero_variance_group_share: torch.Tensor | None = None  # grpo / rloo


# --------------------------------------------------------------------------------------
# Which prompts, and sampling
# --------------------------------------------------------------------------------------


class PromptSchedule:
    """The prompts each process answers at each update.

    The prompts are read as an endless stream of seeded permutations of the dataset; each
    update takes the next ``prompts_per_rollout x processes`` of them, this process its own
    slice, and repeats each prompt ``samples_per_prompt`` times in a row. A group (the
    answers to one prompt) thus lives on one process, side by side, which is all the group
    estimators need. Being a pure function of the update number, the order survives a resume
    without saving any state."""

    def __init__(
        self,
        prompt_count: int,
        prompts_per_rollout: int,
        samples_per_prompt: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        self.prompt_count = prompt_count
        self.prompts_per_rollout = prompts_per_rollout
        self.samples_per_prompt = samples_per_prompt
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self._cached_permutation: tuple[int, list[int]] | None = None

    def indices(self, update: int) -> list[int]:
        """This process's prompt for each response of update ``update`` (0-based)."""
        count, wanted = self.prompt_count, self.prompts_per_rollout
        position = (update * self.process_count + self.process_index) * wanted
        distinct: list[int] = []
        while len(distinct) < wanted:
            epoch, offset = divmod(position, count)
            permutation = self._permutation(epoch)
            take = min(count - offset, wanted - len(distinct))
            distinct.extend(permutation[offset : offset + take])
            position += take
        return [index for index in distinct for _ in range(self.samples_per_prompt)]

    def _permutation(self, epoch: int) -> list[int]:
        """The seeded shuffle of the prompts for one pass over them (the latest one is cached)."""
        cached = self._cached_permutation
        if cached is None or cached[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            cached = (epoch, torch.randperm(self.prompt_count, generator=generator).tolist())
            self._cached_permutation = cached
        return cached[1]


class Sampler:
    """Samples responses with pure temperature sampling and cuts them at the first stop token."""

    def __init__(self, temperature: float, stop_token_ids: list[int], pad_token_id: int) -> None:
        self.temperature = temperature
        self.stop_token_ids = stop_token_ids
        self.pad_token_id = pad_token_id

    def generation_config(self, max_new_tokens: int) -> GenerationConfig:
        """Pure temperature sampling: the loss's log-probabilities are those of
        softmax(logits / T), so no top-k / top-p / repetition penalty may reshape what is
        sampled (TRL sets top_k=0, top_p=1 likewise)."""
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            do_sample=True,
            temperature=self.temperature + 1e-7,
            top_k=0,
            top_p=1.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            use_cache=True,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
        )

    @staticmethod
    @contextlib.contextmanager
    def generation_mode(model: nn.Module) -> Iterator[None]:
        """Generate in eval mode with a blank default generation config, then restore both.

        Eval mode keeps gradient checkpointing (active only when training) from turning the
        KV cache off, which would make generation quadratic. The blank config stops a model's
        generation_config.json (top_k=50, repetition penalty, several EOS ids...) from
        silently changing the sampling distribution.
        """
        was_training = model.training
        saved_generation_config = getattr(model, "generation_config", None)
        model.eval()
        model.generation_config = GenerationConfig()
        try:
            yield
        finally:
            model.generation_config = saved_generation_config
            model.train(was_training)

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(responses, response_mask)``, cut after the first stop token."""
        with self.generation_mode(model):
            sequences = model.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                generation_config=self.generation_config(max_new_tokens),
            )
        return truncate_after_stop_token(
            sequences[:, prompt_ids.size(1) :], self.stop_token_ids, self.pad_token_id
        )
