"""Our GRPO (a PPOJob with ``advantageEstimator: grpo``, through
``python -m rlhf_trainer ppo``) vs TRL's ``GRPOTrainer`` (the project's trl, >= 1.16) on the
same tiny work.

Shared artifacts are bench/ppo_vs_trl.py's (made once per work folder with OUR trainer on
the tiny preset): the SFT policy, the reward model trained from it, and the train / held-out
prompts as JSONL. Both sides then run ``--runs`` times (order alternated; run i uses seed
``--seed`` + i on both sides) with the same prompts, the same reward model (TRL takes it as
``reward_funcs=[AutoModelForSequenceClassification]`` with our tokenizer as its processing
class), the same samples per prompt (``samplesPerPrompt`` = ``num_generations``), the same
number of updates, responses per update, response length, temperature, learning rate
(linear decay), gradient clipping (1.0), clip range (0.2), KL to the reference in the loss
(``klCoef`` = ``beta``, estimator k3 on both sides), rewards normalised by the group's std
(``scaleRewards: group`` = ``scale_rewards="group"``), one optimizer step per rollout
(one mini-batch, one epoch: TRL's defaults ``steps_per_generation`` = 1,
``num_iterations`` = 1) and the loss averaged over every real token of the batch (ours;
TRL's ``loss_type="dapo"``, its default):

  * ours: ``bench/timed_trainer.py ppo --config C`` (= ``python -m rlhf_trainer ppo`` with a
    timer around ``PPOLoop.train``), the config rendered from a PPOJob manifest;
  * TRL:  a script written into the work folder, run by this venv's python, timing
    ``trainer.train()``.

Figures per side (medians over runs): the mean reward-model score of the responses of the
first and last 3 updates and their gain (ours: ``objective/scores``; TRL: ``reward``, the
same mean of the same model's scores of the sampled responses), then ONE evaluation of
both final policies in this process (``PPOLoop.evaluate``: sampled responses of the policy
and the SFT reference to the held-out prompts, scored by the reward model), episodes
(sampled responses) per second of the training call, process wall time.

    .venv/bin/python bench/grpo_vs_trl.py                 # 3 runs each
    .venv/bin/python bench/grpo_vs_trl.py --runs 1 --episodes 64
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import common
import ppo_vs_trl
import rl_runs

TRL_SCRIPT = textwrap.dedent(
    '''
    """TRL GRPOTrainer on the bench's artifacts (settings as in ours)."""
    import json, sys, time

    T0 = time.time()
    settings = json.loads(sys.argv[1])

    import torch
    import trl
    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(settings["policy"], padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    reward_tokenizer = AutoTokenizer.from_pretrained(settings["reward"])
    if reward_tokenizer.pad_token is None:
        reward_tokenizer.pad_token = reward_tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(settings["policy"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(
        settings["reward"], num_labels=1, dtype=torch.float32
    )
    reward.config.pad_token_id = reward_tokenizer.pad_token_id
    prompts = load_dataset("json", data_files=settings["train_prompts"], split="train")
    rollout = settings["prompts_per_rollout"] * settings["samples"]
    config = GRPOConfig(
        output_dir=settings["output"] + "/checkpoints",
        max_steps=settings["updates"],
        per_device_train_batch_size=rollout,  # completions per optimizer step
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=settings["samples"],
        max_completion_length=settings["response_length"],
        temperature=settings["temperature"],
        top_p=1.0,
        top_k=0,
        learning_rate=settings["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=settings["kl"],
        epsilon=0.2,
        scale_rewards="group",
        loss_type="dapo",
        seed=settings["seed"],
        data_seed=settings["seed"],
        bf16=False,  # fp32 on CPU as ours
        gradient_checkpointing=False,  # TRL's default is True; ours is off
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward],
        args=config,
        train_dataset=prompts,
        processing_class=tokenizer,
        reward_processing_classes=[reward_tokenizer],
    )
    began = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - began
    trainer.save_model(settings["output"] + "/model")
    tokenizer.save_pretrained(settings["output"] + "/model")
    history = [row for row in trainer.state.log_history if "reward" in row]
    with open(settings["output"] + "/result.json", "w") as handle:
        json.dump(
            {
                "trl": trl.__version__,
                "train_seconds": train_seconds,
                "seconds": time.time() - T0,
                "updates": trainer.state.global_step,
                "episodes": trainer.state.global_step * rollout,
                "history": history,
            },
            handle,
        )
    '''
)


def run_ours(
    args: argparse.Namespace, paths: dict[str, Path], run: Path, seed: int
) -> dict[str, Any]:
    rollout = args.prompts_per_rollout * args.samples
    manifest = common.job_manifest(
        "PPOJob",
        "grpo",
        {
            **common.CPU,
            "policy": common.claim("sft/model"),
            "rewardModel": common.claim("rm/model"),
            "dataset": {**common.claim("prompts/train.jsonl"), "evalSplit": "eval.jsonl"},
            "training": {
                "learningRate": args.lr,
                "loggingSteps": 1,
                "seed": seed,
                "maxLength": 64,
                "precision": "fp32",
                "batchSize": rollout,
                "maxGradNorm": 1.0,
            },
            "ppo": {
                "advantageEstimator": "grpo",
                "samplesPerPrompt": args.samples,
                "klPenalty": "loss",
                "klEstimator": "k3",
                "klCoef": args.kl,
                "scaleRewards": "group",
                "totalEpisodes": args.updates * rollout,
                "rolloutBatchSize": rollout,
                "miniBatches": 1,
                "epochs": 1,
                "clipRange": 0.2,
                "responseLength": args.response_length,
                "temperature": args.temperature,
                "evalPrompts": args.eval_prompts,
            },
        },
    )
    ours = rl_runs.run_our_trainer(manifest, paths, run, args.threads, "our GRPO")
    scores = [
        float(row["objective/scores"])
        for row in ours.summary["history"]
        if "objective/scores" in row
    ]
    return {
        "wall": ours.wall,
        "train": ours.train_seconds,
        "episodes": rollout * len(scores),
        "scores": scores,
        "policy": ours.policy,
    }


def run_trl(
    args: argparse.Namespace, paths: dict[str, Path], run: Path, seed: int
) -> dict[str, Any]:
    output = run / "trl"
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "policy": str(paths["policy"]),
        "reward": str(paths["reward"]),
        "train_prompts": str(paths["train_prompts"]),
        "output": str(output),
        "updates": args.updates,
        "prompts_per_rollout": args.prompts_per_rollout,
        "samples": args.samples,
        "lr": args.lr,
        "kl": args.kl,
        "response_length": args.response_length,
        "temperature": args.temperature,
        "seed": seed,
    }
    wall, result = rl_runs.run_trl_script(TRL_SCRIPT, settings, run, args.threads, "TRL GRPO")
    return {
        "wall": wall,
        "train": result["train_seconds"],
        "episodes": int(result["episodes"]),
        "scores": [float(row["reward"]) for row in result["history"]],
        "policy": output / "model",
        "trl": result["trl"],
    }


def scoring_forms(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, float]:
    """The reward model's mean score of the SAME responses in the two sides' input forms.

    Ours re-encodes (prompt, response) in the form the reward model was trained on
    (``scoring.json``: the tokenizer's special tokens, EOS appended, as TRL's RewardTrainer
    trains); TRL's GRPOTrainer scores ``prompt + decoded completion`` tokenized with
    ``add_special_tokens=False`` (no BOS, no EOS). The responses: the SFT policy's, one
    sampled per held-out prompt. A difference here is an offset between the two sides'
    training-reward rows that is not learning."""
    import torch
    from rlhf_trainer.generation import generate
    from rlhf_trainer.scoring import RewardScorer, read_format, score
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(paths["policy"]))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = [
        json.loads(line)["prompt"]
        for line in paths["eval_prompts"].read_text().splitlines()
        if line.strip()
    ]
    policy = AutoModelForCausalLM.from_pretrained(str(paths["policy"]), dtype=torch.float32)
    responses = [
        samples[0]
        for samples in generate(
            policy, tokenizer, prompts, max_new_tokens=args.response_length,
            temperature=args.temperature, seed=args.seed,
        )
    ]  # fmt: skip
    reward = AutoModelForSequenceClassification.from_pretrained(
        str(paths["reward"]), num_labels=1, dtype=torch.float32
    )
    reward.config.pad_token_id = tokenizer.pad_token_id
    form = read_format(paths["reward"], tokenizer, 64)
    ours = RewardScorer(reward, tokenizer, form).score(prompts, responses)
    trl_inputs = [
        tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    theirs = score(reward, tokenizer.pad_token_id, trl_inputs, 8)
    return {
        "ours_form": float(ours.mean()),
        "trl_form": float(theirs.mean()),
        "offset": float((ours - theirs).mean()),
        "bos": float(tokenizer.bos_token is not None),
        "append_eos": float(form.append_eos),
    }


def figures(result: dict[str, Any], evaluation: dict[str, float]) -> dict[str, float]:
    scores = result["scores"]
    first, last = rl_runs.first_and_last(scores)
    return {
        "updates": float(len(scores)),
        "score_first3": first,
        "score_last3": last,
        "score_gain": last - first,
        "eval_reward_policy": evaluation["eval/reward_policy"],
        "eval_reward_reference": evaluation["eval/reward_reference"],
        "eval_gain": evaluation["eval/reward_policy"] - evaluation["eval/reward_reference"],
        "eval_win_rate": evaluation["eval/win_rate"],
        "eval_kl": evaluation["eval/kl"],
        "train_seconds": result["train"],
        "episodes_per_second": result["episodes"] / result["train"],
        "process_seconds": result["wall"],
    }


ROWS = (
    ("updates", "updates (optimizer steps = rollouts)"),
    ("score_first3", "training reward, first 3 updates"),
    ("score_last3", "training reward, last 3 updates"),
    ("score_gain", "training reward gain (last3 - first3)"),
    ("eval_reward_policy", "eval reward, trained policy"),
    ("eval_reward_reference", "eval reward, SFT reference"),
    ("eval_gain", "eval gain over reference"),
    ("eval_win_rate", "eval win rate vs reference"),
    ("eval_kl", "eval KL (summed per response)"),
    ("train_seconds", "train() seconds"),
    ("episodes_per_second", "episodes/s (train())"),
    ("process_seconds", "process wall seconds"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--updates", type=int, default=16, help="rollouts = optimizer steps")
    parser.add_argument("--prompts-per-rollout", type=int, default=8)
    parser.add_argument(
        "--samples", type=int, default=4, help="samples per prompt (num_generations)"
    )
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--kl", type=float, default=0.04, help="klCoef = beta (k3, in the loss)")
    parser.add_argument("--response-length", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--seed", type=int, default=42, help="run i uses seed + i on both sides (paired seeds)"
    )
    parser.add_argument("--train-prompts", type=int, default=224)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--rm-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help=common.THREADS_HELP)
    parser.add_argument("--workdir", help="folder for artifacts and runs (default: temp)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()

    folder = common.workdir("grpo", args.workdir)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # the shared evaluation, in this process
    paths = ppo_vs_trl.prepare(folder, args)
    forms = scoring_forms(paths, args)
    print(
        "the reward model's mean score of the SFT policy's responses to the held-out prompts:"
        f" {forms['ours_form']:.2f} in our input form (as trained: special tokens"
        f"{', EOS appended' if forms['append_eos'] else ''}), {forms['trl_form']:.2f} in"
        f" TRL GRPOTrainer's (prompt + completion text, add_special_tokens=False):"
        f" training-reward rows differ by {forms['offset']:+.2f} before any learning",
        flush=True,
    )
    evaluate = ppo_vs_trl.Evaluator(paths, args)
    trl_version = "?"

    def run_side(side: str, run: Path, seed: int) -> dict[str, float]:
        nonlocal trl_version
        result = (run_ours if side == "ours" else run_trl)(args, paths, run, seed)
        trl_version = result.get("trl", trl_version)
        return figures(result, evaluate(result["policy"]))

    def describe(row: dict[str, float]) -> str:
        return (
            f"training reward {row['score_first3']:.2f} -> {row['score_last3']:.2f},"
            f" eval {row['eval_reward_policy']:.2f} vs ref {row['eval_reward_reference']:.2f},"
            f" {row['episodes_per_second']:.1f} episodes/s, train {row['train_seconds']:.1f}s,"
            f" process {row['process_seconds']:.1f}s"
        )

    results = rl_runs.alternating_runs(
        folder, ("ours", "trl"), args.runs, lambda index: args.seed + index, run_side,
        describe, args.keep,
    )  # fmt: skip
    medians = rl_runs.medians(results, [key for key, _ in ROWS])
    table_rows = []
    for key, label in ROWS:
        ours, theirs = medians["ours"][key], medians["trl"][key]
        ratio = ours / theirs if theirs else float("nan")
        table_rows.append(
            [label, ours, theirs, f"{ratio:.2f}" if key == "episodes_per_second" else ""]
        )
    print()
    print(
        f"medians of {args.runs} runs (seeds {args.seed}..{args.seed + args.runs - 1}, same on"
        f" both sides); {args.updates} updates of {args.prompts_per_rollout} prompts x"
        f" {args.samples} samples, lr {args.lr}, beta {args.kl} (k3, in the loss), response"
        f" {args.response_length} tokens, temperature {args.temperature}"
    )
    print(
        common.table(
            ["figure", "ours (grpo)", f"TRL {trl_version} GRPOTrainer", "ours/TRL"], table_rows
        )
    )
    speed = medians["ours"]["episodes_per_second"] / medians["trl"]["episodes_per_second"]
    print(f"speed ours/TRL: {speed:.2f}x")
    common.save_json(
        args.json,
        {
            "machine": common.machine(),
            "settings": vars(args),
            "medians": medians,
            "runs": results,
            "speed_ratio": speed,
            "scoring_forms": forms,
        },
    )
    if not args.workdir and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
