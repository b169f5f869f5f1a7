"""SFTJob: supervised fine-tuning, generative (causal LM) or classification."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, ListSet, Rule
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


class ClassWeights(ApiModel):
    """Weights of the classes in the classification loss (weighted cross-entropy), for
    imbalanced data: set balanced: true, or weights."""

    rules = (
        Rule(
            cel="self.balanced != (has(self.weights) && size(self.weights) > 0)",
            check=lambda weights: weights.balanced != bool(weights.weights),
            message="classWeights: set either balanced: true or weights (label -> weight)",
        ),
    )

    balanced: bool = False
    """Weight each class by n_samples / (n_classes * its count in the training data), as
    scikit-learn's class_weight="balanced": rare classes count as much as common ones."""
    weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict, max_length=256)
    """An explicit weight per label, e.g. {negative: 1.0, positive: 4.0}; labels left out
    weigh 1. Every key must be one of labels."""


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

CLASS_WEIGHTS_FIT_LABELS = Rule(
    cel=(
        "!has(self.classWeights) || (self.task == 'sequence-classification'"
        " && (!has(self.classWeights.weights)"
        " || self.classWeights.weights.all(label, label in self.labels)))"
    ),
    check=lambda spec: (
        spec.class_weights is None
        or (
            spec.task == "sequence-classification"
            and all(label in spec.labels for label in spec.class_weights.weights)
        )
    ),
    message=(
        "classWeights: needs task sequence-classification, and every key of"
        " classWeights.weights must be one of labels"
    ),
    field="classWeights",
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
        CLASS_WEIGHTS_FIT_LABELS,
    )

    task: SFTTask = "causal-lm"
    """causal-lm: learn to produce completions; sequence-classification: learn labels
    (e.g. sentiment) with a classification head."""
    model: PolicyModelSource
    """The model to fine-tune."""
    dataset: SFTDataset
    """Training (and evaluation) data."""
    labels: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], ListSet()] = Field(
        default_factory=list, max_length=1000
    )
    """Class names for sequence-classification, in label-id order, each once."""
    class_weights: ClassWeights | None = None
    """Weighted cross-entropy for imbalanced classes (sequence-classification); every
    class weighs 1 when unset."""
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
