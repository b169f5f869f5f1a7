# The operator image: the controller only (no torch). Built from the repository root under
# the chart's default name (helm values image.repository / image.tag; see README.md,
# "Install on a cluster", to push it to your own registry):
#   docker build -t ghcr.io/rlhf-operator/operator:0.1.0 .
# BASE_IMAGE is any image with Python 3.11+ whose `pip` installs for root and that has
# `useradd`. The tests build this file with buildah on a CPU base made from Debian packages
# (hack/build-images.sh; tests/harness/images.py loads the result into the test node):
#   buildah bud --layers -t ghcr.io/rlhf-operator/operator:0.1.0 \
#     --build-arg BASE_IMAGE=localhost/rlhf-operator/cpu-base:python3.11-bookworm .
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer_image/rlhf_trainer/__init__.py ./trainer_image/rlhf_trainer/__init__.py
RUN pip install --no-cache-dir . \
    && useradd --uid 1000 --create-home --shell /usr/sbin/nologin rlhf

USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["rlhf", "operator"]
