"""The end-to-end tests share the cluster tests' fixtures."""

from tests.cluster.conftest import crds_installed  # noqa: F401
