"""``rlhf local``: run job manifests with no cluster, as local processes."""
