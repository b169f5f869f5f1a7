"""Our PPO (rlhf_trainer.ppo_core, through ``python -m rlhf_trainer ppo``) vs TRL 1.12's
``trl.experimental.ppo.PPOTrainer`` on the same tiny setup.

Shared artifacts, made once per work folder with OUR trainer on the tiny preset:
  * the SFT policy (SFTJob, tiny model + tiny prompt-completion data),
  * the reward model (RewardModelJob from that policy, tiny preferences),
  * prompts as JSONL: ``prompts/train.jsonl`` and ``prompts/eval.jsonl``.
Then each side runs ``--runs`` times (alternating which goes first; run i uses seed
``--seed`` + i on both sides, so the medians cover sampling noise, not just timing noise:
our loop is deterministic for a seed) with the same episodes, rollout batch, mini-batches,
PPO epochs, learning rate, KL coefficient, response length and temperature:
  * ours: ``bench/timed_trainer.py ppo --config C`` (= ``python -m rlhf_trainer ppo`` with
    a timer around ``PPOLoop.train``), the config rendered from a PPOJob manifest;
  * TRL:  a script run by the TRL 1.12 venv's python (see bench/trl_venv.py), timing
    ``trainer.train()``; with ``--trl-gc both`` (the default) twice per run: as released,
    and with ``gc.collect`` patched to a no-op during ``train()`` ("TRL 1.12, gc.collect
    off": TRL 1.12 collects garbage twice per update, which dominated its time on CPU), so
    the ratio says what our loop does rather than what TRL's garbage collection costs.
Both final policies are then scored by ONE evaluation (``PPOLoop.evaluate`` in this
process: sampled responses of the policy and of the SFT reference to the same held-out
prompts, scored by the reward model), so the comparison of learning does not depend on
either side's own evaluation code.

Figures per side (medians over runs): mean reward-model score of the first and last 3
updates and their gain, KL to the reference at the end of training, eval reward of the
policy and of the reference, win rate, eval KL, episodes/s of the training call, process
wall time.

    .venv/bin/python bench/ppo_vs_trl.py                 # 3 runs each
    .venv/bin/python bench/ppo_vs_trl.py --runs 1 --episodes 128
    .venv/bin/python bench/ppo_vs_trl.py --trl-gc off   # TRL without its per-update GC
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
import rl_runs
import trl_venv

TRL_SCRIPT = textwrap.dedent(
    '''
    """TRL 1.12 PPOTrainer on the bench's artifacts (run by the TRL 1.12 venv)."""
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
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == "1.12.0", trl.__version__
    tokenizer = AutoTokenizer.from_pretrained(settings["policy"], padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.float32
    policy = AutoModelForCausalLM.from_pretrained(settings["policy"], dtype=dtype)
    reference = AutoModelForCausalLM.from_pretrained(settings["policy"], dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(
        settings["reward"], num_labels=1, dtype=dtype
    )
    value = AutoModelForSequenceClassification.from_pretrained(
        settings["reward"], num_labels=1, dtype=dtype
    )
    for model in (reward, value):
        model.config.pad_token_id = tokenizer.pad_token_id

    def tokenized(path):
        rows = load_dataset("json", data_files=path, split="train")
        return rows.map(
            lambda row: {
                "input_ids": tokenizer(
                    row["prompt"], add_special_tokens=False, truncation=True,
                    max_length=settings["max_length"],
                )["input_ids"]
            },
            remove_columns=rows.column_names,
        )

    config = PPOConfig(
        output_dir=settings["output"] + "/checkpoints",
        total_episodes=settings["episodes"],
        # TRL's rollout is per_device_train_batch_size * gradient_accumulation_steps; with
        # accumulation 1 each mini-batch is one micro-batch and one optimizer step, as ours.
        per_device_train_batch_size=settings["rollout"],
        gradient_accumulation_steps=1,
        num_mini_batches=settings["mini_batches"],
        num_ppo_epochs=settings["epochs"],
        learning_rate=settings["lr"],
        lr_scheduler_type="linear",
        kl_coef=settings["kl"],
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        gamma=1.0,
        lam=0.95,
        response_length=settings["response_length"],
        temperature=settings["temperature"],
        stop_token="eos",
        missing_eos_penalty=None,
        whiten_rewards=False,
        seed=settings["seed"],
        bf16=False,  # TRL's default is True; fp32 on CPU as ours
        gradient_checkpointing=False,  # TRL's default is True; ours is off
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=tokenized(settings["train_prompts"]),
        eval_dataset=tokenized(settings["eval_prompts"]),
    )
    import gc

    collect = gc.collect
    if settings.get("no_gc"):
        # TRL 1.12's PPO loop calls gc.collect() twice per update (ppo_trainer.py lines
        # 753 and 919); with --trl-gc off it is a no-op during train() only.
        gc.collect = lambda *args, **kwargs: 0
    began = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - began
    gc.collect = collect
    trainer.save_model(settings["output"] + "/model")
    tokenizer.save_pretrained(settings["output"] + "/model")
    with open(settings["output"] + "/result.json", "w") as handle:
        json.dump(
            {
                "train_seconds": train_seconds,
                "seconds": time.time() - T0,
                "updates": trainer.state.global_step,
                "episodes": trainer.state.episode,
                "history": [row for row in trainer.state.log_history if "objective/scores" in row],
            },
            handle,
        )
    '''
)


# --- shared artifacts -----------------------------------------------------------------


def prepare(folder: Path, args: argparse.Namespace) -> dict[str, Path]:
    """SFT policy and reward model (our trainer, tiny preset) and the prompts, once."""
    from rlhf_trainer.presets import tiny_records

    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cache = artifacts / "preset-cache"
    sft_model = artifacts / "sft" / "model"
    rm_model = artifacts / "rm" / "model"
    env = common.offline_env(
        {"HF_DATASETS_CACHE": str(artifacts / "datasets-cache"), **common.thread_env(args.threads)}
    )
    if not (sft_model / "COMPLETE").exists():
        config, _ = common.write_trainer_config(
            artifacts,
            "sft",
            common.job_manifest(
                "SFTJob",
                "sft",
                {
                    **common.CPU,
                    "model": {"preset": "tiny"},
                    "dataset": {"preset": "tiny"},
                    "training": {
                        "maxSteps": args.sft_steps,
                        "learningRate": 3e-3,
                        "batchSize": 16,
                        "maxLength": 64,
                    },
                    "generation": {"samples": 0},
                },
            ),
            cache=cache,
        )
        print(f"preparing the SFT policy ({args.sft_steps} steps, our trainer)", flush=True)
        common.require_ok(
            common.run_timed(
                [common.PYTHON, "-m", "rlhf_trainer", "sft", "--config", str(config)],
                artifacts / "sft.log",
                env=env,
            ),
            "SFT",
        )
    if not (rm_model / "COMPLETE").exists():
        config, output = common.write_trainer_config(
            artifacts,
            "rm",
            common.job_manifest(
                "RewardModelJob",
                "rm",
                {
                    **common.CPU,
                    "model": common.claim("model"),
                    "dataset": {"preset": "tiny", "evalFraction": 0.2},
                    "training": {
                        "maxSteps": args.rm_steps,
                        "learningRate": 1e-3,
                        "batchSize": 8,
                        "maxLength": 64,
                    },
                },
            ),
            inputs={"model": str(sft_model)},
            cache=cache,
        )
        print(f"preparing the reward model ({args.rm_steps} steps, our trainer)", flush=True)
        common.require_ok(
            common.run_timed(
                [common.PYTHON, "-m", "rlhf_trainer", "rm", "--config", str(config)],
                artifacts / "rm.log",
                env=env,
            ),
            "reward model",
        )
        accuracy = json.loads((output / "metrics.json").read_text())["metrics"].get("eval_accuracy")
        print(f"  reward model eval accuracy {accuracy}")
    prompts = artifacts / "prompts"
    rows = tiny_records("ppo", "prompt", args.train_prompts + args.eval_prompts, args.seed)
    common.write_jsonl(prompts / "train.jsonl", rows[: args.train_prompts])
    common.write_jsonl(prompts / "eval.jsonl", rows[args.train_prompts :])
    return {
        "policy": sft_model,
        "reward": rm_model,
        "train_prompts": prompts / "train.jsonl",
        "eval_prompts": prompts / "eval.jsonl",
    }


# --- the two sides --------------------------------------------------------------------


def run_ours(
    args: argparse.Namespace, paths: dict[str, Path], run: Path, seed: int
) -> dict[str, Any]:
    training: dict[str, Any] = {
        "learningRate": args.lr,
        "loggingSteps": 1,
        "seed": seed,
        "maxLength": 64,
        "precision": "fp32",
        # The micro-batch (capped at the mini-batch) and the chunk of the scoring passes:
        # the whole rollout, as TRL's here (per_device_train_batch_size = the rollout, its
        # local_rollout_forward_batch_size 64 >= the rollout). The default 8 would make
        # ours run 2 micro-batches per mini-batch and 4 chunks per pass: other work.
        "batchSize": args.rollout,
    }
    if args.our_max_grad_norm is not None:
        training["maxGradNorm"] = args.our_max_grad_norm
    manifest = common.job_manifest(
        "PPOJob",
        "ppo",
        {
            **common.CPU,
            "policy": common.claim("sft/model"),
            "rewardModel": common.claim("rm/model"),
            "dataset": {**common.claim("prompts/train.jsonl"), "evalSplit": "eval.jsonl"},
            "training": training,
            "ppo": {
                "totalEpisodes": args.episodes,
                "rolloutBatchSize": args.rollout,
                "miniBatches": args.mini_batches,
                "epochs": args.epochs,
                "klCoef": args.kl,
                "responseLength": args.response_length,
                "temperature": args.temperature,
                "evalPrompts": args.eval_prompts,
            },
        },
    )
    ours = rl_runs.run_our_trainer(manifest, paths, run, args.threads, "our PPO")
    history = [row for row in ours.summary["history"] if "objective/scores" in row]
    own_eval = {k: v for k, v in ours.summary["metrics"].items() if k.startswith("eval/")}
    return {
        "wall": ours.wall,
        "train": ours.train_seconds,
        "episodes": args.rollout * len(history),
        "history": history,
        "policy": ours.policy,
        "own_eval": own_eval,
    }


def run_trl(
    args: argparse.Namespace,
    paths: dict[str, Path],
    run: Path,
    python: Path,
    seed: int,
    no_gc: bool = False,
) -> dict[str, Any]:
    output = run / "trl"
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "policy": str(paths["policy"]),
        "reward": str(paths["reward"]),
        "train_prompts": str(paths["train_prompts"]),
        "eval_prompts": str(paths["eval_prompts"]),
        "output": str(output),
        "episodes": args.episodes,
        "rollout": args.rollout,
        "mini_batches": args.mini_batches,
        "epochs": args.epochs,
        "lr": args.lr,
        "kl": args.kl,
        "response_length": args.response_length,
        "temperature": args.temperature,
        "seed": seed,
        "max_length": 64,
        "no_gc": no_gc,
    }
    what = "TRL 1.12 PPO" + (" (gc.collect patched out)" if no_gc else "")
    wall, result = rl_runs.run_trl_script(TRL_SCRIPT, settings, run, args.threads, what, python)
    return {
        "wall": wall,
        "train": result["train_seconds"],
        "episodes": int(result["episodes"]),
        "history": result["history"],
        "policy": output / "model",
    }


# --- one evaluation for both ----------------------------------------------------------


class Evaluator:
    """PPOLoop.evaluate with a given policy against the SFT reference, in this process."""

    def __init__(self, paths: dict[str, Path], args: argparse.Namespace) -> None:
        from transformers import AutoTokenizer

        self.paths = paths
        self.args = args
        self.tokenizer = AutoTokenizer.from_pretrained(str(paths["policy"]))
        texts = [
            json.loads(line)["prompt"]
            for line in paths["eval_prompts"].read_text().splitlines()
            if line.strip()
        ]
        self.prompts = self.tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=64
        )["input_ids"]

    def __call__(self, policy_dir: Path) -> dict[str, float]:
        import torch
        from rlhf_trainer.ppo_core import PPOHyperparameters, PPOLoop
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        def classifier() -> Any:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(self.paths["reward"]), num_labels=1, dtype=torch.float32
            )
            model.config.pad_token_id = self.tokenizer.pad_token_id
            return model

        loop = PPOLoop(
            AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32),
            AutoModelForCausalLM.from_pretrained(str(self.paths["policy"]), dtype=torch.float32),
            classifier(),
            classifier(),
            self.tokenizer,
            self.prompts,
            PPOHyperparameters(
                rollout_batch_size=len(self.prompts),
                response_length=self.args.response_length,
                temperature=self.args.temperature,
                seed=self.args.seed,
            ),
        )
        result = loop.evaluate(self.prompts)
        result.pop("samples", None)
        return {name: float(value) for name, value in result.items()}


# --- figures --------------------------------------------------------------------------


def figures(result: dict[str, Any], evaluation: dict[str, float]) -> dict[str, float]:
    scores = [float(row["objective/scores"]) for row in result["history"]]
    kls = [float(row["objective/kl"]) for row in result["history"]]
    first, last = rl_runs.first_and_last(scores)
    return {
        "updates": float(len(scores)),
        "score_first3": first,
        "score_last3": last,
        "score_gain": last - first,
        "kl_last3": rl_runs.first_and_last(kls)[1],
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
    ("updates", "PPO updates"),
    ("score_first3", "score, first 3 updates"),
    ("score_last3", "score, last 3 updates"),
    ("score_gain", "score gain (last3 - first3)"),
    ("kl_last3", "objective/kl, last 3 updates"),
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
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--rollout", type=int, default=32, help="prompts per rollout")
    parser.add_argument("--mini-batches", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="PPO epochs per rollout")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--kl", type=float, default=0.02)
    parser.add_argument("--response-length", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--seed", type=int, default=42, help="run i uses seed + i on both sides (paired seeds)"
    )
    parser.add_argument("--same-seed", action="store_true", help="every run uses --seed")
    parser.add_argument("--train-prompts", type=int, default=224)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--rm-steps", type=int, default=60)
    parser.add_argument(
        "--our-max-grad-norm",
        type=float,
        default=None,
        help="ours clips gradients at training.maxGradNorm (default 1.0); TRL 1.12 PPO never"
        " clips. Set e.g. 1e9 to run the same algorithm without clipping",
    )
    parser.add_argument(
        "--trl-gc",
        choices=("both", "on", "off"),
        default="both",
        help="TRL 1.12's PPO calls gc.collect() twice per update: run TRL with it (on),"
        " with gc.collect patched to a no-op during train() (off), or both (default)",
    )
    parser.add_argument("--threads", type=int, default=1, help=common.THREADS_HELP)
    parser.add_argument("--torch-from-pypi", action="store_true", help="see bench/trl_venv.py")
    parser.add_argument("--workdir", help="folder for artifacts and runs (default: temp)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()

    python, versions = trl_venv.ensure(args.torch_from_pypi)
    print(
        f"TRL venv: {python.parent.parent} (trl {versions['trl']}, torch {versions['torch']},"
        f" transformers {versions['transformers']})"
    )
    folder = common.workdir("ppo", args.workdir)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # the shared evaluation, in this process
    paths = prepare(folder, args)
    evaluate = Evaluator(paths, args)
    trl_sides = {"on": ["trl"], "off": ["trl-nogc"], "both": ["trl", "trl-nogc"]}[args.trl_gc]
    sides = ["ours", *trl_sides]
    own_evals = []

    def run_side(side: str, run: Path, seed: int) -> dict[str, float]:
        result = (
            run_ours(args, paths, run, seed)
            if side == "ours"
            else run_trl(args, paths, run, python, seed, no_gc=side == "trl-nogc")
        )
        if side == "ours":
            own_evals.append(result["own_eval"])
        return figures(result, evaluate(result["policy"]))

    def describe(row: dict[str, float]) -> str:
        return (
            f"score {row['score_first3']:.2f} -> {row['score_last3']:.2f},"
            f" eval {row['eval_reward_policy']:.2f} vs ref {row['eval_reward_reference']:.2f},"
            f" kl {row['kl_last3']:.2f}, {row['episodes_per_second']:.1f} episodes/s,"
            f" train {row['train_seconds']:.1f}s, process {row['process_seconds']:.1f}s"
        )

    results = rl_runs.alternating_runs(
        folder,
        sides,
        args.runs,
        lambda index: args.seed if args.same_seed else args.seed + index,
        run_side,
        describe,
        args.keep,
    )
    medians = rl_runs.medians(results, [key for key, _ in ROWS])
    labels = {"trl": "TRL 1.12", "trl-nogc": "TRL 1.12, gc.collect off"}
    table_rows = []
    for key, label in ROWS:
        row: list[Any] = [label, *(medians[side][key] for side in sides)]
        for side in trl_sides:
            theirs = medians[side][key]
            ratio = medians["ours"][key] / theirs if theirs else float("nan")
            row.append(f"{ratio:.2f}" if key == "episodes_per_second" else "")
        table_rows.append(row)
    print()
    print(
        f"medians of {args.runs} runs (seeds {args.seed}"
        f"{'' if args.same_seed else f'..{args.seed + args.runs - 1}'}, same on every side);"
        f" {args.episodes} episodes, rollout {args.rollout},"
        f" {args.mini_batches} mini-batches, {args.epochs} epochs, lr {args.lr}, kl {args.kl},"
        f" response {args.response_length} tokens, temperature {args.temperature}"
    )
    headers = [
        "figure",
        "ours",
        *(labels[side] for side in trl_sides),
        *(f"ours/{labels[side]}" for side in trl_sides),
    ]
    print(common.table(headers, table_rows))
    speeds = {
        side: medians["ours"]["episodes_per_second"] / medians[side]["episodes_per_second"]
        for side in trl_sides
    }
    for side, speed in speeds.items():
        print(f"speed ours/{labels[side]}: {speed:.2f}x (goal >= 1.0)")
    common.save_json(
        args.json,
        {
            "machine": common.machine(),
            "settings": vars(args),
            "trl_venv": versions,
            "medians": medians,
            "runs": results,
            "our_trainer_own_eval": own_evals,
            "speed_ratio": speeds.get("trl"),
            "speed_ratio_trl_without_gc": speeds.get("trl-nogc"),
        },
    )
    if not args.workdir and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
