"""finetune-operator: plans, runs and follows fine-tuning of language models on Kubernetes.

Importing this package is cheap and needs neither kopf nor torch; the operator's kopf handlers
(main.py) and its controller (`finetune_operator.controller`) are imported only by
`finetune operator`. What the operator shares with the trainer lives in `finetune_contract`.
"""

__version__ = "0.1.0"
