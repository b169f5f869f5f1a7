"""Our trainer vs a plain TRL script doing the same SFT / reward-model / DPO work.

Both sides train the same model folder (a ~10.9M-parameter Llama built from a config with
the tiny preset's tokenizer, or the preset itself with ``--size tiny``) on the same rows
written to a JSONL file, with the same steps, batch, learning rate, seed, max_length, fp32
on CPU, no evaluation and no generated samples.

(a) ours:  ``python -m rlhf_trainer {sft,rm} --config CONFIG`` (through
    bench/timed_trainer.py, which only adds a timer around ``Trainer.train``), the config
    rendered from a job manifest by ``TrainerConfig`` as the operator renders it;
(b) plain: a TRL script (SFTTrainer + SFTConfig, RewardTrainer + RewardConfig,
    DPOTrainer + DPOConfig) that the bench writes into the work folder and runs as a
    subprocess.

DPO (``--stages dpo``): ours is a DPOJob (policy = the model folder, preference pairs,
``dpo.beta`` / ``dpo.lossType``); plain TRL is DPOTrainer with the same beta and loss, the
reference loaded from the same folder as a second model (as ours does), same batch, steps,
learning rate, max_length, seed. Neither side evaluates (no eval or test split) and ours
has no rewardModel to judge with, so ``train()`` is the same work on both sides.

Each side reports, from one clock started on the first line of the Python process
(ours: bench/timed_trainer.py; plain: the script): the time until ``train()`` begins
(imports, config, data, tokenization, model), ``train()`` itself, and what follows it
(saving the model; ours also writes metrics.json and the HTML report with SVG curves), plus the
process wall time seen from outside (interpreter start included) and, for ours, the
``seconds`` of metrics.json (run_stage's clock: after imports, before the report).
Runs alternate the order (ours first on even runs); medians over ``--runs``. Every
process gets a fresh datasets cache, so each pays the same JSON conversion and
tokenization. ``--threads`` (default 1) fixes torch's threads for both sides.

    .venv/bin/python bench/trainer_overhead.py               # 5 runs each, SFT and RM
    .venv/bin/python bench/trainer_overhead.py --runs 1 --sft-steps 10 --rm-steps 10
    .venv/bin/python bench/trainer_overhead.py --stages dpo --runs 3   # DPOJob vs plain DPO
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

PLAIN_SCRIPT = textwrap.dedent(
    '''
    """Plain TRL: what a user would write without the operator (settings as in ours)."""
    import json, sys, time

    T0 = time.time()
    settings = json.loads(sys.argv[1])

    import torch
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    common = dict(
        output_dir=settings["output"] + "/checkpoints",
        max_steps=settings["steps"],
        learning_rate=settings["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0.0,
        weight_decay=0.0,
        per_device_train_batch_size=settings["batch"],
        per_device_eval_batch_size=settings["batch"],
        gradient_accumulation_steps=1,
        max_grad_norm=1.0,
        activation_checkpointing=False,  # TRL defaults to True; ours to False
        bf16=False,  # TRL's default is True; fp32 on CPU
        fp16=False,
        use_cpu=True,
        logging_steps=settings["logging_steps"],
        logging_first_step=True,
        save_strategy="steps",  # the TrainingArguments default: saves at the end too
        save_steps=settings["save_steps"],
        save_total_limit=2,
        seed=settings["seed"],
        data_seed=settings["seed"],
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        eval_strategy="no",
        max_length=settings["max_length"],
    )
    dataset = load_dataset("json", data_files=settings["data"], split="train")
    if settings["stage"] == "sft":
        from transformers import AutoModelForCausalLM
        from trl import SFTConfig, SFTTrainer

        model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, packing=False, completion_only_loss=True),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    elif settings["stage"] == "dpo":
        from transformers import AutoModelForCausalLM
        from trl import DPOConfig, DPOTrainer

        model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
        reference = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32)
        trainer = DPOTrainer(
            model=model,
            ref_model=reference,
            args=DPOConfig(
                **common,
                loss_type=[settings["loss_type"]],
                beta=settings["beta"],
                label_smoothing=0.0,
                precompute_ref_log_probs=False,
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    else:
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(
            settings["model"], dtype=torch.float32, num_labels=1
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(
            model=model,
            args=RewardConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    train_began = time.time() - T0
    began = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - began
    trainer.save_model(settings["output"] + "/model")
    tokenizer.save_pretrained(settings["output"] + "/model")
    with open(settings["output"] + "/timing.json", "w") as handle:
        json.dump(
            {
                "train_seconds": train_seconds,
                "train_began": train_began,
                "seconds": time.time() - T0,
                "train_loss": result.training_loss,
                "steps": trainer.state.global_step,
            },
            handle,
        )
    '''
)


def prepare(folder: Path, size: str, rows: int, seed: int) -> dict[str, Path]:
    from rlhf_trainer.presets import tiny_records

    model = common.build_llama(folder / f"model-{size}", common.SIZES[size])
    return {
        "model": model,
        "sft": common.write_jsonl(
            folder / "data" / "sft.jsonl", tiny_records("sft", "prompt-completion", rows, seed)
        ),
        "rm": common.write_jsonl(
            folder / "data" / "rm.jsonl", tiny_records("rm", "preference", rows, seed)
        ),
        "dpo": common.write_jsonl(
            folder / "data" / "dpo.jsonl", tiny_records("dpo", "preference", rows, seed)
        ),
    }


def our_manifest(stage: str, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    training = {
        "maxSteps": steps,
        "learningRate": args.lr,
        "batchSize": args.batch,
        "maxLength": args.max_length,
        "seed": args.seed,
        "precision": "fp32",
        "loggingSteps": args.logging_steps,
    }
    spec: dict[str, Any] = {
        **common.CPU,
        ("policy" if stage == "dpo" else "model"): common.claim("model"),
        "dataset": {**common.claim("data.jsonl"), "format": _format(stage)},
        "training": training,
        "runPolicy": {"checkpointInterval": args.save_steps},
    }
    if stage == "sft":
        spec["generation"] = {"samples": 0}
        return common.job_manifest("SFTJob", "bench-sft", spec)
    if stage == "dpo":
        spec["dpo"] = {"beta": args.beta, "lossType": args.loss_type}
        return common.job_manifest("DPOJob", "bench-dpo", spec)
    return common.job_manifest("RewardModelJob", "bench-rm", spec)


def _format(stage: str) -> str:
    return "prompt-completion" if stage == "sft" else "preference"


def run_ours(
    stage: str, steps: int, args: argparse.Namespace, paths: dict[str, Path], run: Path
) -> dict[str, Any]:
    config, output = common.write_trainer_config(
        run,
        "ours",
        our_manifest(stage, steps, args),
        inputs={
            ("policy" if stage == "dpo" else "model"): str(paths["model"]),
            "dataset": str(paths[stage]),
        },
    )
    timing_file = run / "ours-timing.json"
    env = common.offline_env(
        {
            "BENCH_TIMING_FILE": str(timing_file),
            "HF_DATASETS_CACHE": str(run / "ds-ours"),
            **common.thread_env(args.threads),
        }
    )
    timed = common.run_timed(
        [common.PYTHON, str(common.BENCH / "timed_trainer.py"), stage, "--config", str(config)],
        run / "ours.log",
        env=env,
    )
    common.require_ok(timed, f"ours {stage}")
    summary = json.loads((output / "metrics.json").read_text())
    timing = json.loads(timing_file.read_text())
    began = timing["train_seconds_began"]
    return {
        "wall": timed.wall,
        "startup": began,
        "train": timing["train_seconds"],
        "after": timing["process_seconds_inside"] - began - timing["train_seconds"],
        "seconds": float(summary["seconds"]),
        "loss": summary["metrics"].get("train_loss"),
        "steps": summary.get("steps"),
    }


def run_plain(
    stage: str, steps: int, args: argparse.Namespace, paths: dict[str, Path], run: Path
) -> dict[str, Any]:
    output = run / "plain"
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "stage": stage,
        "model": str(paths["model"]),
        "data": str(paths[stage]),
        "output": str(output),
        "steps": steps,
        "lr": args.lr,
        "batch": args.batch,
        "max_length": args.max_length,
        "seed": args.seed,
        "logging_steps": args.logging_steps,
        "save_steps": args.save_steps,
        "beta": args.beta,
        "loss_type": args.loss_type,
    }
    script = run.parent / "plain_trl.py"
    script.write_text(PLAIN_SCRIPT)
    env = common.offline_env(
        {"HF_DATASETS_CACHE": str(run / "ds-plain"), **common.thread_env(args.threads)}
    )
    timed = common.run_timed(
        [common.PYTHON, str(script), json.dumps(settings)], run / "plain.log", env=env
    )
    common.require_ok(timed, f"plain TRL {stage}")
    timing = json.loads((output / "timing.json").read_text())
    return {
        "wall": timed.wall,
        "startup": timing["train_began"],
        "train": timing["train_seconds"],
        "after": timing["seconds"] - timing["train_began"] - timing["train_seconds"],
        "seconds": float("nan"),
        "loss": timing["train_loss"],
        "steps": timing["steps"],
    }


def bench_stage(
    stage: str, steps: int, args: argparse.Namespace, paths: dict[str, Path], folder: Path
) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
    for index in range(args.runs):
        order = ("ours", "plain") if index % 2 == 0 else ("plain", "ours")
        for side in order:
            run = folder / stage / f"run{index}-{side}"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            result = (run_ours if side == "ours" else run_plain)(stage, steps, args, paths, run)
            results[side].append(result)
            print(
                f"  {stage} run {index + 1}/{args.runs} {side:5s}: to train()"
                f" {result['startup']:.2f}s  train() {result['train']:.2f}s  after"
                f" {result['after']:.2f}s  metrics.json seconds {result['seconds']:.1f}"
                f"  process {result['wall']:.2f}s  loss {result['loss']:.4f}"
                f"  load {common.loadavg()}",
                flush=True,
            )
            if not args.keep:
                shutil.rmtree(run, ignore_errors=True)
    return results


PHASES = ("startup", "train", "after", "wall")


def summarise(stage: str, results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for side in ("ours", "plain"):
        rows = results[side]
        figures[side] = {
            key: common.median([row[key] for row in rows]) for key in (*PHASES, "seconds", "loss")
        }
        figures[side]["spread"] = {
            key: common.spread([row[key] for row in rows]) for key in (*PHASES, "seconds")
        }
        figures[side]["runs"] = rows
    figures["ratio"] = {key: figures["ours"][key] / figures["plain"][key] for key in PHASES}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument(
        "--stages", default="sft,rm", help="comma-separated: sft, rm, dpo (default sft,rm)"
    )
    parser.add_argument("--size", choices=sorted(common.SIZES), default="10m")
    parser.add_argument("--sft-steps", type=int, default=50)
    parser.add_argument("--rm-steps", type=int, default=25)
    parser.add_argument("--dpo-steps", type=int, default=25)
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta (both sides)")
    parser.add_argument(
        "--loss-type", default="sigmoid", choices=("sigmoid", "ipo", "hinge", "robust")
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows", type=int, default=2048, help="rows of data written to JSONL")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument(
        "--save-steps", type=int, default=500, help="checkpoint interval, both sides (default 500)"
    )
    parser.add_argument("--threads", type=int, default=1, help=common.THREADS_HELP)
    parser.add_argument("--workdir", help="folder for models, data and runs (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep every run's output")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()

    folder = common.workdir("overhead", args.workdir)
    paths = prepare(folder, args.size, args.rows, args.seed)
    parameters = common.parameter_count(paths["model"])
    print(f"model {paths['model'].name}: {parameters / 1e6:.1f}M parameters; work folder {folder}")
    document: dict[str, Any] = {"machine": common.machine(), "settings": vars(args)}
    document["parameters"] = parameters
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for stage in stages:
        steps = {"sft": args.sft_steps, "rm": args.rm_steps, "dpo": args.dpo_steps}[stage]
        print(f"{stage}: {steps} steps, batch {args.batch}, {args.runs} runs each", flush=True)
        document[stage] = summarise(stage, bench_stage(stage, steps, args, paths, folder))

    headers = [
        "stage",
        "side",
        "start -> train()",
        "train()",
        "after train()",
        "process wall",
        "metrics.json seconds",
        "train loss",
    ]
    rows = []
    for stage in stages:
        for side in ("ours", "plain"):
            f = document[stage][side]
            rows.append(
                [
                    stage,
                    side if side == "ours" else "plain TRL",
                    *(f"{f[key]:.2f} ({f['spread'][key]})" for key in PHASES),
                    f"{f['seconds']:.1f}" if side == "ours" else "-",
                    f["loss"],
                ]
            )
        ratio = document[stage]["ratio"]
        rows.append([stage, "ours/plain", *(f"{ratio[key]:.3f}" for key in PHASES), "", ""])
    print()
    print(f"medians of {args.runs} runs (min-max in brackets); goal: train() ratio <= 1.02")
    print(common.table(headers, rows))
    common.save_json(args.json, document)
    if not args.workdir and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
