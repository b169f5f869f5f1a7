"""Test harnesses: a real Kubernetes control plane on 127.0.0.1 (see kube.py)."""
