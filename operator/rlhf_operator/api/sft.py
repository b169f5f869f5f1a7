"""SFTJob: supervised fine-tuning, generative (causal LM) or classification."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, Rule
from .common import DatasetSource, Generation, Lora, PolicyModelSource, Training
from .job import JobSpec

SFTTask = Literal["causal-lm", "sequence-classification"]


class SFTDataset(DatasetSource):
    """Training data for SFT."""

    format: Literal["auto", "messages", "prompt-completion", "text", "classification"] = "auto"
    """Row layout, as TRL's dataset formats. messages: a "messages" list of {role, content}
    (roles system, user, assistant, tool; string content), rendered with the model's chat
    template; prompt-completion: "prompt" and "completion", both strings or both message
    lists; text: a "text" string; classification: "text" and "label" (a class name from
    labels, or its index). "auto" decides from the columns present. A value of another
    shape fails the job with a DataError naming the column and the row."""


class EarlyStopping(ApiModel):
    """Stop when the evaluation metric stops improving (needs evaluation data)."""

    metric: Annotated[str, Field(min_length=1, max_length=128)] = "eval_loss"
    """Metric to watch, e.g. eval_loss, eval_accuracy, eval_f1_macro."""
    patience: Annotated[int, Field(ge=1, le=1000)] = 3
    """Evaluations without improvement before stopping."""
    threshold: Annotated[float, Field(ge=0)] = 0.0
    """Smallest change that counts as an improvement."""


class Candidates(ApiModel):
    """Generate responses with the trained policy for people to rank (the input of a
    RewardModelJob's ranking data)."""

    per_prompt: Annotated[int, Field(ge=2, le=64)] = 4
    """Responses generated for each prompt."""
    max_prompts: Annotated[int, Field(ge=1)] = 100
    """Prompts taken from the evaluation data (or the training data when there is none)."""


class SFTGeneration(Generation):
    """Text generated after training: samples saved with the model, and optionally
    candidates for labeling."""

    samples: Annotated[int, Field(ge=0, le=1000)] = 8
    """Evaluation prompts to answer; the answers are saved with the model."""
    candidates: Candidates | None = None
    """When set, write candidates.jsonl for labeling into the output."""


CLASSIFICATION_NEEDS_LABELS = Rule(
    cel=(
        "self.task != 'sequence-classification' ||"
        " (self.labels.size() >= 2 && self.dataset.format in ['auto', 'classification'])"
    ),
    check=lambda spec: (
        spec.task != "sequence-classification"
        or (len(spec.labels) >= 2 and spec.dataset.format in ("auto", "classification"))
    ),
    message=(
        "labels: task sequence-classification needs at least two labels and classification data"
    ),
    field="labels",
)
CAUSAL_LM_NEEDS_TEXT = Rule(
    cel=(
        "self.task != 'causal-lm'"
        " || (self.labels.size() == 0 && self.dataset.format != 'classification')"
    ),
    check=lambda spec: (
        spec.task != "causal-lm" or (not spec.labels and spec.dataset.format != "classification")
    ),
    message=(
        "task: causal-lm trains on messages, prompt-completion or text data without labels;"
        " use task sequence-classification for labelled data"
    ),
    field="task",
)
GENERATIVE_ONLY = Rule(
    cel="self.task == 'causal-lm' || (!self.packing && !has(self.generation.candidates))",
    check=lambda spec: (
        spec.task == "causal-lm" or (not spec.packing and spec.generation.candidates is None)
    ),
    message="packing: packing and generation.candidates need task causal-lm",
    field="packing",
)
EARLY_STOPPING_NEEDS_EVAL = Rule(
    cel="!has(self.earlyStopping) || has(self.dataset.evalSplit) || has(self.dataset.evalFraction)",
    check=lambda spec: (
        spec.early_stopping is None
        or spec.dataset.eval_split is not None
        or spec.dataset.eval_fraction is not None
    ),
    message="earlyStopping: needs evaluation data; set dataset.evalSplit or dataset.evalFraction",
    field="earlyStopping",
)


class SFTJobSpec(JobSpec):
    """Supervised fine-tuning of a causal language model (SFTTrainer) or of a sequence
    classifier (Trainer with cross-entropy)."""

    rules = (
        *JobSpec.rules,
        CLASSIFICATION_NEEDS_LABELS,
        CAUSAL_LM_NEEDS_TEXT,
        GENERATIVE_ONLY,
        EARLY_STOPPING_NEEDS_EVAL,
    )

    task: SFTTask = "causal-lm"
    """causal-lm: learn to produce completions; sequence-classification: learn labels
    (e.g. sentiment) with a classification head."""
    model: PolicyModelSource
    """The model to fine-tune."""
    dataset: SFTDataset
    """Training (and evaluation) data."""
    labels: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000
    )
    """Class names for sequence-classification, in label-id order."""
    training: Training = Field(default_factory=Training)
    """Optimisation settings."""
    packing: bool = False
    """Pack several short examples into each sequence (causal-lm only); attention does not
    cross example boundaries."""
    completion_only_loss: bool = True
    """Learn only the completion, not the prompt. For messages: only the assistant turns
    when the chat template can mark them (TRL's rule: {% generation %} markers, or a
    training template TRL ships for it), otherwise only each conversation's last
    assistant turn (the turns before it are the prompt; a notice says so)."""
    lora: Lora | None = None
    """Train LoRA adapters instead of all weights."""
    early_stopping: EarlyStopping | None = None
    """Stop when the evaluation metric stops improving."""
    generation: SFTGeneration = Field(default_factory=SFTGeneration)
    """Sample generations and candidates for labeling (causal-lm)."""
