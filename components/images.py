"""Pinned images the components run in (built from ``images/``; never ``latest``)."""

#: images/control-plane/Dockerfile: optimizer, KFP, MLflow and S3 clients, /app/components.
CONTROL_PLANE_IMAGE = "ghcr.io/ecotune/control-plane:0.1.0"
#: images/evaluator/Dockerfile: vllm/vllm-openai + ecotune, for the GPU evaluator step.
EVALUATOR_IMAGE = "ghcr.io/ecotune/evaluator:0.1.0"
