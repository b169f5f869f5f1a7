"""The trainer that every training pod runs: ``python -m rlhf_trainer {sft,rm,ppo}``."""

__version__ = "0.1.0"
