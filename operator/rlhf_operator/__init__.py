"""rlhf-operator: run SFT, reward-model and PPO training as Kubernetes custom resources."""

__version__ = "0.1.0"
