"""The trainer that runs inside every training pod and behind `finetune run --local`.

Importing this package is cheap: torch and friends are imported only by the modules that train.
"""
