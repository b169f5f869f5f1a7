"""Invalid manifests, each with where the problem is and a fragment of the message.

The same cases run against the pydantic models (tests/unit) and against the real
apiserver with the generated CRDs (tests/cluster): both must refuse each manifest,
naming the field path and saying the same thing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

MINIMAL: dict[str, dict[str, Any]] = {
    "SFTJob": {
        "model": {"preset": "tiny"},
        "dataset": {"preset": "tiny"},
    },
    "RewardModelJob": {
        "model": {"fromJob": {"kind": "SFTJob", "name": "policy"}},
        "dataset": {"preset": "tiny"},
    },
    "PPOJob": {
        "policy": {"fromJob": {"kind": "SFTJob", "name": "policy"}},
        "rewardModel": {"fromJob": {"kind": "RewardModelJob", "name": "reward"}},
        "dataset": {"preset": "tiny"},
    },
    "DPOJob": {
        "policy": {"fromJob": {"kind": "SFTJob", "name": "policy"}},
        "dataset": {"preset": "tiny"},
    },
}

_DELETE = object()


@dataclass(frozen=True)
class InvalidCase:
    name: str
    kind: str
    changes: dict[str, Any]
    """Dotted paths under the manifest root, e.g. "spec.training.learningRate", and
    their new values (_DELETE removes the key)."""
    path: str
    """The field path both the apiserver and the models must name."""
    fragment: str
    """Text both messages must contain."""
    metadata_name: str = "bad"
    extra: dict[str, Any] = field(default_factory=dict)


def minimal_manifest(kind: str, name: str = "valid") -> dict[str, Any]:
    return {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": copy.deepcopy(MINIMAL[kind]),
    }


def build(case: InvalidCase) -> dict[str, Any]:
    manifest = minimal_manifest(case.kind, case.metadata_name)
    for dotted, value in case.changes.items():
        *parents, leaf = dotted.split(".")
        node = manifest
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return manifest


CASES = [
    InvalidCase(
        "learning-rate-not-a-number",
        "SFTJob",
        {"spec.training.learningRate": "fast"},
        "spec.training.learningRate",
        "number",
    ),
    InvalidCase(
        "learning-rate-negative",
        "SFTJob",
        {"spec.training.learningRate": -1},
        "spec.training.learningRate",
        "greater than 0",
    ),
    InvalidCase(
        "batch-size-zero",
        "RewardModelJob",
        {"spec.training.batchSize": 0},
        "spec.training.batchSize",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "unknown-task",
        "SFTJob",
        {"spec.task": "regression"},
        "spec.task",
        "sequence-classification",
    ),
    InvalidCase(
        "two-model-sources",
        "SFTJob",
        {"spec.model": {"preset": "tiny", "hub": {"id": "Qwen/Qwen2.5-0.5B"}}},
        "spec.model",
        "model source: set exactly one of hub, pvc, fromJob or preset",
    ),
    InvalidCase(
        "no-model-source",
        "RewardModelJob",
        {"spec.model": {}},
        "spec.model",
        "model source: set exactly one of hub, pvc, fromJob or preset",
    ),
    InvalidCase("model-missing", "SFTJob", {"spec.model": _DELETE}, "spec.model", "Required value"),
    InvalidCase(
        "reward-model-from-sft-job",
        "PPOJob",
        {"spec.rewardModel": {"fromJob": {"kind": "SFTJob", "name": "policy"}}},
        "spec.rewardModel.fromJob.kind",
        "RewardModelJob",
    ),
    InvalidCase(
        "policy-from-reward-job",
        "SFTJob",
        {"spec.model": {"fromJob": {"kind": "RewardModelJob", "name": "reward"}}},
        "spec.model.fromJob.kind",
        "SFTJob",
    ),
    InvalidCase(
        "from-job-bad-name",
        "PPOJob",
        {"spec.policy": {"fromJob": {"kind": "SFTJob", "name": "Not_A_Name"}}},
        "spec.policy.fromJob.name",
        "match",
    ),
    InvalidCase(
        "two-dataset-sources",
        "SFTJob",
        {"spec.dataset": {"preset": "tiny", "hub": {"id": "trl-lib/Capybara"}}},
        "spec.dataset",
        "dataset source: set exactly one of hub, pvc or preset",
    ),
    InvalidCase(
        "eval-split-and-fraction",
        "SFTJob",
        {"spec.dataset.evalSplit": "test", "spec.dataset.evalFraction": 0.1},
        "spec.dataset.evalFraction",
        "set at most one of evalSplit or evalFraction",
    ),
    InvalidCase(
        "eval-fraction-too-big",
        "RewardModelJob",
        {"spec.dataset.evalFraction": 1.5},
        "spec.dataset.evalFraction",
        "less than 1",
    ),
    InvalidCase(
        "test-split-and-fraction",
        "SFTJob",
        {"spec.dataset.testSplit": "test", "spec.dataset.testFraction": 0.1},
        "spec.dataset.testFraction",
        "set at most one of testSplit or testFraction",
    ),
    InvalidCase(
        "test-and-eval-fractions-leave-nothing",
        "RewardModelJob",
        {"spec.dataset.testFraction": 0.5, "spec.dataset.evalFraction": 0.5},
        "spec.dataset.testFraction",
        "testFraction + evalFraction must be below 1",
    ),
    InvalidCase(
        "test-split-is-the-eval-split",
        "SFTJob",
        {"spec.dataset.testSplit": "validation", "spec.dataset.evalSplit": "validation"},
        "spec.dataset.testSplit",
        "must differ from evalSplit",
    ),
    InvalidCase(
        "class-weights-for-an-unknown-label",
        "SFTJob",
        {
            "spec.task": "sequence-classification",
            "spec.labels": ["neg", "pos"],
            "spec.classWeights": {"weights": {"neg": 1.0, "neutral": 2.0}},
        },
        "spec.classWeights",
        "every key of classWeights.weights must be one of labels",
    ),
    InvalidCase(
        "class-weights-for-causal-lm",
        "SFTJob",
        {"spec.classWeights": {"balanced": True}},
        "spec.classWeights",
        "classWeights: needs task sequence-classification",
    ),
    InvalidCase(
        "class-weights-balanced-and-explicit",
        "SFTJob",
        {
            "spec.task": "sequence-classification",
            "spec.labels": ["neg", "pos"],
            "spec.classWeights": {"balanced": True, "weights": {"neg": 2.0}},
        },
        "spec.classWeights",
        "set either balanced: true or weights",
    ),
    InvalidCase(
        "class-weight-zero",
        "SFTJob",
        {
            "spec.task": "sequence-classification",
            "spec.labels": ["neg", "pos"],
            "spec.classWeights": {"weights": {"neg": 0}},
        },
        "spec.classWeights.weights.neg",
        "greater than 0",
    ),
    InvalidCase(
        "checkpoint-minutes-negative",
        "PPOJob",
        {"spec.runPolicy": {"checkpointIntervalMinutes": -1}},
        "spec.runPolicy.checkpointIntervalMinutes",
        "greater than or equal to 0",
    ),
    InvalidCase(
        "multi-node-without-shared-output",
        "SFTJob",
        {"spec.resources": {"nodes": 2}},
        "spec.output.accessModes",
        "resources.nodes > 1 needs ReadWriteMany",
    ),
    InvalidCase(
        "fsdp-on-cpu",
        "SFTJob",
        {"spec.resources": {"gpusPerNode": 0}, "spec.distributed": {"strategy": "fsdp"}},
        "spec.distributed.strategy",
        "fsdp and deepspeed need GPUs",
    ),
    InvalidCase(
        "tracker-twice",
        "RewardModelJob",
        {"spec.trackers": ["tensorboard", "tensorboard"]},
        "spec.trackers",
        "name each tracker once",
    ),
    InvalidCase(
        "ppo-with-fsdp",
        "PPOJob",
        {"spec.distributed": {"strategy": "fsdp"}},
        "spec.distributed.strategy",
        "PPO keeps four models in step and supports ddp only",
    ),
    InvalidCase(
        "unknown-strategy",
        "PPOJob",
        {"spec.distributed": {"strategy": "horovod"}},
        "spec.distributed.strategy",
        "deepspeed-zero3",
    ),
    InvalidCase(
        "memory-not-a-quantity",
        "SFTJob",
        {"spec.resources": {"memory": "lots"}},
        "spec.resources.memory",
        "match",
    ),
    InvalidCase(
        "unknown-field", "SFTJob", {"spec.trainng": {"epochs": 1}}, "spec.trainng", "unknown field"
    ),
    InvalidCase(
        "classification-without-labels",
        "SFTJob",
        {"spec.task": "sequence-classification"},
        "spec.labels",
        "task sequence-classification needs at least two labels",
    ),
    InvalidCase(
        "causal-lm-with-labels",
        "SFTJob",
        {"spec.labels": ["neg", "pos"]},
        "spec.task",
        "causal-lm trains on messages, prompt-completion or text data",
    ),
    InvalidCase(
        "packing-for-classification",
        "SFTJob",
        {
            "spec.task": "sequence-classification",
            "spec.labels": ["neg", "pos"],
            "spec.packing": True,
        },
        "spec.packing",
        "packing and generation.candidates need task causal-lm",
    ),
    InvalidCase(
        "early-stopping-without-eval",
        "SFTJob",
        {"spec.earlyStopping": {"patience": 2}},
        "spec.earlyStopping",
        "needs evaluation data",
    ),
    InvalidCase(
        "mini-batches-do-not-divide",
        "PPOJob",
        {"spec.ppo": {"rolloutBatchSize": 16, "miniBatches": 3}},
        "spec.ppo.miniBatches",
        "must divide ppo.rolloutBatchSize evenly",
    ),
    InvalidCase(
        "ppo-micro-batch-does-not-divide-the-mini-batch",
        "PPOJob",
        {"spec.ppo": {"rolloutBatchSize": 32, "miniBatches": 2}, "spec.training": {"batchSize": 6}},
        "spec.training.batchSize",
        "in PPO it is the micro-batch",
    ),
    InvalidCase(
        "grpo-with-one-sample-per-prompt",
        "PPOJob",
        {"spec.ppo": {"advantageEstimator": "grpo", "rolloutBatchSize": 8}},
        "spec.ppo.samplesPerPrompt",
        "need at least 2 of them",
    ),
    InvalidCase(
        "rollout-splits-a-group",
        "PPOJob",
        {"spec.ppo": {"advantageEstimator": "rloo", "samplesPerPrompt": 3, "rolloutBatchSize": 8}},
        "spec.ppo.rolloutBatchSize",
        "must be a multiple of ppo.samplesPerPrompt",
    ),
    InvalidCase(
        "value-model-without-gae",
        "PPOJob",
        {
            "spec.ppo": {"advantageEstimator": "reinforce++"},
            "spec.valueModel": {"fromJob": {"kind": "RewardModelJob", "name": "reward"}},
        },
        "spec.valueModel",
        "only the gae estimator has a value model",
    ),
    InvalidCase(
        "unknown-advantage-estimator",
        "PPOJob",
        {"spec.ppo": {"advantageEstimator": "ppo"}},
        "spec.ppo.advantageEstimator",
        "grpo",
    ),
    InvalidCase(
        "kl-coef-not-a-number",
        "PPOJob",
        {"spec.ppo": {"klCoef": "high"}},
        "spec.ppo.klCoef",
        "number",
    ),
    InvalidCase(
        "name-too-long",
        "SFTJob",
        {},
        "metadata.name",
        "at most 52 characters",
        metadata_name="a" * 60,
    ),
    InvalidCase(
        "env-value-and-secret",
        "PPOJob",
        {
            "spec.env": [
                {
                    "name": "HF_TOKEN",
                    "value": "x",
                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                }
            ]
        },
        "spec.env[0]",
        "env: set exactly one of value or valueFrom",
    ),
    InvalidCase(
        "env-bad-name",
        "SFTJob",
        {"spec.env": [{"name": "1BAD", "value": "x"}]},
        "spec.env[0].name",
        "match",
    ),
    InvalidCase(
        "existing-claim-and-storage-class",
        "RewardModelJob",
        {"spec.output": {"existingClaim": "models", "storageClassName": "fast"}},
        "spec.output.existingClaim",
        "set at most one of storageClassName or existingClaim",
    ),
    InvalidCase(
        "toleration-bad-effect",
        "SFTJob",
        {"spec.resources": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}},
        "spec.resources.tolerations[0].effect",
        "NoExecute",
    ),
    InvalidCase(
        "start-deadline-too-short",
        "SFTJob",
        {"spec.runPolicy": {"startDeadlineSeconds": 5}},
        "spec.runPolicy.startDeadlineSeconds",
        "greater than or equal to 10",
    ),
    InvalidCase(
        "backoff-limit-negative",
        "PPOJob",
        {"spec.runPolicy": {"backoffLimit": -1}},
        "spec.runPolicy.backoffLimit",
        "greater than or equal to 0",
    ),
    InvalidCase(
        "lora-dropout-one",
        "SFTJob",
        {"spec.lora": {"dropout": 1.0}},
        "spec.lora.dropout",
        "less than 1",
    ),
    InvalidCase(
        "dpo-label-smoothing-without-robust",
        "DPOJob",
        {"spec.dpo": {"labelSmoothing": 0.1}},
        "spec.dpo.labelSmoothing",
        "only the robust loss reads it",
    ),
    InvalidCase(
        "dpo-label-smoothing-half",
        "DPOJob",
        {"spec.dpo": {"lossType": "robust", "labelSmoothing": 0.5}},
        "spec.dpo.labelSmoothing",
        "less than or equal to 0.49",
    ),
    InvalidCase(
        "dpo-reference-free-with-lora",
        "DPOJob",
        {"spec.dpo": {"referenceFree": True}, "spec.lora": {"r": 8}},
        "spec.dpo.referenceFree",
        "not with lora",
    ),
    InvalidCase(
        "dpo-unknown-loss",
        "DPOJob",
        {"spec.dpo": {"lossType": "kto"}},
        "spec.dpo.lossType",
        "robust",
    ),
    InvalidCase(
        "dpo-beta-zero",
        "DPOJob",
        {"spec.dpo": {"beta": 0}},
        "spec.dpo.beta",
        "greater than 0",
    ),
    InvalidCase(
        "dpo-ratings-hold-no-pairs",
        "DPOJob",
        {"spec.dataset.format": "rating"},
        "spec.dataset.format",
        "ranking",
    ),
    InvalidCase(
        "dpo-policy-from-reward-job",
        "DPOJob",
        {"spec.policy": {"fromJob": {"kind": "RewardModelJob", "name": "reward"}}},
        "spec.policy.fromJob.kind",
        "DPOJob",
    ),
    InvalidCase(
        "dpo-judge-from-sft-job",
        "DPOJob",
        {"spec.rewardModel": {"fromJob": {"kind": "SFTJob", "name": "policy"}}},
        "spec.rewardModel.fromJob.kind",
        "RewardModelJob",
    ),
    InvalidCase(
        "dpo-early-stopping-without-eval",
        "DPOJob",
        {"spec.earlyStopping": {"patience": 2}},
        "spec.earlyStopping",
        "needs evaluation data",
    ),
    InvalidCase(
        "hub-model-without-id",
        "SFTJob",
        {"spec.model": {"hub": {"revision": "main"}}},
        "spec.model.hub.id",
        "Required value",
    ),
    # Issue 14, item 9: specs the apiserver accepted and the operator could not render
    # (tests/cluster/test_render_property.py found them): each refused at admission now.
    InvalidCase(
        "name-with-a-dot",
        "SFTJob",
        {},
        "metadata.name",
        "no '.' (a DNS label",
        metadata_name="team.run",
    ),
    InvalidCase(
        "multi-node-name-starting-with-a-digit",
        "SFTJob",
        {"spec.resources": {"nodes": 2}, "spec.output": {"accessModes": ["ReadWriteMany"]}},
        "metadata.name",
        "must start with a letter when resources.nodes > 1",
        metadata_name="7b-run",
    ),
    InvalidCase(
        "queue-name-with-a-space",
        "SFTJob",
        {"spec.queueName": "has space"},
        "spec.queueName",
        "match",
    ),
    InvalidCase(
        "class-label-twice",
        "SFTJob",
        {
            "spec.task": "sequence-classification",
            "spec.labels": ["a", "a"],
            "spec.dataset": {"preset": "tiny", "format": "classification"},
        },
        "spec.labels",
        'Duplicate value: "a"',
    ),
    InvalidCase(
        "access-mode-twice",
        "RewardModelJob",
        {"spec.output": {"accessModes": ["ReadWriteOnce", "ReadWriteOnce"]}},
        "spec.output.accessModes",
        'Duplicate value: "ReadWriteOnce"',
    ),
    InvalidCase(
        "read-write-once-pod-with-another-mode",
        "SFTJob",
        {"spec.output": {"accessModes": ["ReadWriteOncePod", "ReadWriteMany"]}},
        "spec.output.accessModes",
        "ReadWriteOncePod cannot be combined",
    ),
    InvalidCase(
        "secret-key-with-a-slash",
        "SFTJob",
        {"spec.env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}]},
        "spec.env[0].valueFrom.secretKeyRef.key",
        "match",
    ),
    InvalidCase(
        "storage-class-with-a-space",
        "SFTJob",
        {"spec.output": {"storageClassName": "fast ssd"}},
        "spec.output.storageClassName",
        "match",
    ),
    InvalidCase(
        "gpu-resource-without-a-domain",
        "SFTJob",
        {"spec.resources": {"gpuResourceName": "gpu"}},
        "spec.resources.gpuResourceName",
        "match",
    ),
    InvalidCase(
        "gpu-resource-in-kubernetes-io",
        "SFTJob",
        {"spec.resources": {"gpuResourceName": "kubernetes.io/gpu"}},
        "spec.resources.gpuResourceName",
        "outside the kubernetes.io domain",
    ),
    InvalidCase(
        "node-selector-bad-key",
        "PPOJob",
        {"spec.resources": {"nodeSelector": {"gpu type": "a100"}}},
        "spec.resources.nodeSelector",
        "every key must be a label key",
    ),
    InvalidCase(
        "node-selector-bad-value",
        "PPOJob",
        {"spec.resources": {"nodeSelector": {"gpu": "a100 80gb"}}},
        "spec.resources.nodeSelector",
        "match",
    ),
    InvalidCase(
        "toleration-exists-with-a-value",
        "SFTJob",
        {"spec.resources": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
        "spec.resources.tolerations[0].value",
        "must be empty when operator is Exists",
    ),
    InvalidCase(
        "toleration-without-key-equal",
        "SFTJob",
        {"spec.resources": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
        "spec.resources.tolerations[0].operator",
        "must be Exists when key is empty",
    ),
    InvalidCase(
        "toleration-seconds-without-no-execute",
        "SFTJob",
        {"spec.resources": {"tolerations": [{"key": "gpu", "tolerationSeconds": 60}]}},
        "spec.resources.tolerations[0].tolerationSeconds",
        "only with effect NoExecute",
    ),
    InvalidCase(
        "toleration-bad-key",
        "SFTJob",
        {"spec.resources": {"tolerations": [{"key": "a b", "operator": "Exists"}]}},
        "spec.resources.tolerations[0].key",
        "match",
    ),
    InvalidCase(
        "output-size-zero",
        "SFTJob",
        {"spec.output": {"size": "0Gi"}},
        "spec.output.size",
        "match",
    ),
    InvalidCase(
        "memory-negative",
        "SFTJob",
        {"spec.resources": {"memory": "-1Gi"}},
        "spec.resources.memory",
        "match",
    ),
    InvalidCase(
        "image-with-a-space",
        "SFTJob",
        {"spec.image": "trainer :1"},
        "spec.image",
        "match",
    ),
]

_DATA_VOLUME = {"name": "data", "emptyDir": {}}

POD_AND_NETWORK_CASES = [
    InvalidCase(
        "pod-label-of-the-operator",
        "SFTJob",
        {"spec.pod": {"labels": {"rlhf.dev/job": "other"}}},
        "spec.pod.labels",
        "are set by the operator",
    ),
    InvalidCase(
        "pod-label-of-the-job-controller",
        "PPOJob",
        {"spec.pod": {"labels": {"app.kubernetes.io/instance": "other"}}},
        "spec.pod.labels",
        "are set by the operator",
    ),
    InvalidCase(
        "pod-label-key-not-a-qualified-name",
        "SFTJob",
        {"spec.pod": {"labels": {"has space": "x"}}},
        "spec.pod.labels",
        "keys must be qualified names",
    ),
    InvalidCase(
        "pod-label-key-prefix-too-long",
        "SFTJob",
        {"spec.pod": {"labels": {("a." * 127) + "b/name": "x"}}},
        "spec.pod.labels",
        "keys must be qualified names",
    ),
    InvalidCase(
        "pod-label-value-invalid",
        "RewardModelJob",
        {"spec.pod": {"labels": {"team": "has space"}}},
        "spec.pod.labels.team",
        "match",
    ),
    InvalidCase(
        "pod-annotation-of-the-operator",
        "SFTJob",
        {"spec.pod": {"annotations": {"prometheus.io/scrape": "false"}}},
        "spec.pod.annotations",
        "are set by the operator",
    ),
    InvalidCase(
        "pod-annotation-key-invalid",
        "SFTJob",
        {"spec.pod": {"annotations": {"-sidecar": "false"}}},
        "spec.pod.annotations",
        "keys must be qualified names",
    ),
    InvalidCase(
        "pod-pull-secret-twice",
        "SFTJob",
        {"spec.pod": {"imagePullSecrets": [{"name": "registry"}, {"name": "registry"}]}},
        "spec.pod.imagePullSecrets",
        "name each Secret once",
    ),
    InvalidCase(
        "pod-service-account-not-a-name",
        "SFTJob",
        {"spec.pod": {"serviceAccountName": "Trainer_Account"}},
        "spec.pod.serviceAccountName",
        "match",
    ),
    InvalidCase(
        "pod-token-without-an-account",
        "PPOJob",
        {"spec.pod": {"automountServiceAccountToken": True}},
        "spec.pod.automountServiceAccountToken",
        "set it too",
    ),
    InvalidCase(
        "pod-scheduler-not-a-name",
        "SFTJob",
        {"spec.pod": {"schedulerName": "My Scheduler"}},
        "spec.pod.schedulerName",
        "match",
    ),
    InvalidCase(
        "pod-volume-named-like-the-operators",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "output", "emptyDir": {}}]}},
        "spec.pod.volumes",
        "are the operator's volumes",
    ),
    InvalidCase(
        "pod-volume-named-like-an-input",
        "PPOJob",
        {"spec.pod": {"volumes": [{"name": "input-0", "emptyDir": {}}]}},
        "spec.pod.volumes",
        "are the operator's volumes",
    ),
    InvalidCase(
        "pod-volume-name-not-a-dns-label",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "Data", "emptyDir": {}}]}},
        "spec.pod.volumes[0].name",
        "should match",
    ),
    InvalidCase(
        "pod-volumes-with-one-name",
        "SFTJob",
        {"spec.pod": {"volumes": [_DATA_VOLUME, {"name": "data", "configMap": {"name": "x"}}]}},
        "spec.pod.volumes",
        "each volume needs its own name",
    ),
    InvalidCase(
        "pod-volume-unknown-source-field",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "data", "emptyDir": {"sizeLimt": "1Gi"}}]}},
        "spec.pod.volumes[0].emptyDir.sizeLimt",
        "unknown field",
    ),
    InvalidCase(
        "pod-volume-csi-without-driver",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "data", "csi": {"readOnly": True}}]}},
        "spec.pod.volumes[0].csi.driver",
        "Required value",
    ),
    InvalidCase(
        "pod-volume-with-two-sources",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "data", "emptyDir": {}, "configMap": {"name": "x"}}]}},
        "spec.pod.volumes",
        "each volume needs exactly one source",
    ),
    InvalidCase(
        "pod-volume-with-no-source",
        "SFTJob",
        {"spec.pod": {"volumes": [{"name": "data"}]}},
        "spec.pod.volumes",
        "each volume needs exactly one source",
    ),
    InvalidCase(
        "pod-mount-sub-path-climbs-out",
        "SFTJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "a/../../b"}],
            }
        },
        "spec.pod.volumeMounts",
        "subPath must be a relative path",
    ),
    InvalidCase(
        "pod-mount-of-no-volume",
        "SFTJob",
        {"spec.pod": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}},
        "spec.pod.volumeMounts",
        "each mount must name one of pod.volumes",
    ),
    InvalidCase(
        "pod-mount-of-the-operators-volume",
        "SFTJob",
        {"spec.pod": {"volumeMounts": [{"name": "output", "mountPath": "/data"}]}},
        "spec.pod.volumeMounts",
        "each mount must name one of pod.volumes",
    ),
    InvalidCase(
        "pod-mount-under-output",
        "SFTJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "/output/model"}],
            }
        },
        "spec.pod.volumeMounts",
        "are the operator's mounts",
    ),
    InvalidCase(
        "pod-mount-over-tmp",
        "RewardModelJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "/tmp"}],
            }
        },
        "spec.pod.volumeMounts",
        "are the operator's mounts",
    ),
    InvalidCase(
        "pod-mount-above-inputs",
        "PPOJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "/etc"}],
            }
        },
        "spec.pod.volumeMounts",
        "are the operator's mounts",
    ),
    InvalidCase(
        "pod-mount-relative",
        "SFTJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "data"}],
            }
        },
        "spec.pod.volumeMounts",
        "must be an absolute path",
    ),
    InvalidCase(
        "pod-mount-dot-dot",
        "SFTJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [{"name": "data", "mountPath": "/data/../output"}],
            }
        },
        "spec.pod.volumeMounts",
        "must be an absolute path",
    ),
    InvalidCase(
        "pod-mounts-on-one-path",
        "SFTJob",
        {
            "spec.pod": {
                "volumes": [_DATA_VOLUME],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/data", "readOnly": True},
                ],
            }
        },
        "spec.pod.volumeMounts",
        "each mount needs its own mountPath",
    ),
    InvalidCase(
        "pod-affinity-unknown-field",
        "SFTJob",
        {"spec.pod": {"affinity": {"nodeAfinity": {}}}},
        "spec.pod.affinity.nodeAfinity",
        "unknown field",
    ),
    InvalidCase(
        "pod-affinity-wrong-type",
        "PPOJob",
        {
            "spec.pod": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}
            }
        },
        "spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        "must be of type object",
    ),
    InvalidCase(
        "pod-topology-spread-without-key",
        "SFTJob",
        {"spec.pod": {"topologySpreadConstraints": [{"maxSkew": 1}]}},
        "spec.pod.topologySpreadConstraints[0].topologyKey",
        "Required value",
    ),
    InvalidCase(
        "pod-run-as-root",
        "SFTJob",
        {"spec.pod": {"securityContext": {"runAsUser": 0}}},
        "spec.pod.securityContext.runAsUser",
        "0 is root",
    ),
    InvalidCase(
        "pod-fs-group-change-policy-unknown",
        "SFTJob",
        {"spec.pod": {"securityContext": {"fsGroupChangePolicy": "Never"}}},
        "spec.pod.securityContext.fsGroupChangePolicy",
        "OnRootMismatch",
    ),
    InvalidCase(
        "network-device-without-domain",
        "SFTJob",
        {"spec.resources": {"network": {"devices": {"ib": 1}}}},
        "spec.resources.network.devices",
        "extended resource names with a domain",
    ),
    InvalidCase(
        "network-device-is-the-gpu",
        "SFTJob",
        {"spec.resources": {"network": {"devices": {"nvidia.com/gpu": 8}}}},
        "spec.resources.network.devices",
        "request GPUs with gpusPerNode",
    ),
    InvalidCase(
        "network-device-count-zero",
        "SFTJob",
        {"spec.resources": {"network": {"devices": {"rdma/ib": 0}}}},
        "spec.resources.network.devices.rdma/ib",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "nccl-variable-not-nccl",
        "SFTJob",
        {"spec.distributed": {"nccl": {"variables": {"FI_PROVIDER": "efa"}}}},
        "spec.distributed.nccl.variables",
        "names are NCCL_",
    ),
    InvalidCase(
        "nccl-variable-with-its-own-field",
        "PPOJob",
        {"spec.distributed": {"nccl": {"variables": {"NCCL_DEBUG": "INFO"}}}},
        "spec.distributed.nccl.variables",
        "have their own fields",
    ),
    InvalidCase(
        "nccl-ib-hca-with-a-space",
        "SFTJob",
        {"spec.distributed": {"nccl": {"ibHca": "mlx5_0 mlx5_1"}}},
        "spec.distributed.nccl.ibHca",
        "match",
    ),
    InvalidCase(
        "nccl-debug-unknown",
        "SFTJob",
        {"spec.distributed": {"nccl": {"debug": "LOUD"}}},
        "spec.distributed.nccl.debug",
        "TRACE",
    ),
]

CASES += POD_AND_NETWORK_CASES
