"""Sampling text from a causal LM, batched, left-padded, seeded."""

from __future__ import annotations

from typing import Any


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    per_prompt: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    add_special_tokens: bool = False,
) -> list[list[str]]:
    """``per_prompt`` completions (text after the prompt) for each prompt.

    ``add_special_tokens``: let the tokenizer add its BOS (plain-text prompts, tokenized
    so in training); chat-rendered prompts already hold the template's own.
    """
    import torch

    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    results: list[list[str]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            encoded = tokenizer(
                batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
            )
            encoded = {name: tensor.to(device) for name, tensor in encoded.items()}
            sampling = temperature > 0
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=sampling,
                    temperature=temperature if sampling else None,
                    top_p=top_p if sampling else None,
                    num_return_sequences=per_prompt,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for index in range(len(batch)):
                results.append(texts[index * per_prompt : (index + 1) * per_prompt])
    finally:
        tokenizer.padding_side = padding_side
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return results
