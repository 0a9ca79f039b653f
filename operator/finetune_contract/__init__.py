"""finetune_contract: what the operator and the trainer agree on, and nothing else.

Both sides import this package; it imports neither of them, nor torch, nor kopf: only pydantic,
PyYAML and the standard library (a test scans the imports: tests/test_imports.py). It is the
leaf of the project, so a change to the contract is made once, here. It sits in operator/, the
source root of the torch-free packages, and both images install it (their Dockerfiles copy it):

- `api`: the FineTuneJob API, finetune.dev/v1alpha1: the pydantic models the CRD is generated
  from, the operator validates with and the trainer reads its spec and plan through;
- `rules`: the cross-field rules of that API, each once, as CEL for the API server and as
  Python for `finetune validate`, the operator and the trainer, with one message;
- `strategies`: the one table of training strategies (ZeRO stage, sharded, offloaded, what
  CPU ranks refuse) and the DeepSpeed settings the planner counts and the trainer writes;
- `trainer_config`: `TrainerConfig`, the file every training rank reads;
- `layout`: ports, paths and file names (metrics and rendezvous ports, the data root, the
  final model and the summary file);
- `progress_gauges`: the names of the trainer's progress gauges, which the operator reads.
"""
