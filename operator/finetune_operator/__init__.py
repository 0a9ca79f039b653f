"""finetune-operator: plans, runs and follows fine-tuning of language models on Kubernetes.

Importing this package is cheap and needs neither kopf nor torch; the operator's handlers live
in `finetune_operator.handlers` and are imported only by `finetune operator`.
"""

__version__ = "0.1.0"
