"""The FineTuneJob state machine: (what was observed, now, settings) -> (actions, new status).

Pure functions of data, so every transition is unit-tested and a crash at any point is
harmless: the shell (finetune_operator/controller) executes the actions (creates answer 409
when the object exists, deletes 404 when it is gone, both ignored) and only then writes the
status, so the next reconcile recomputes the same actions from the same observation.

Phases: Pending -> Running -> Succeeded | Failed, with Restarting (a rank failed, or
spec.resources was edited; the gang restarts from the latest checkpoint as the next
attempt's Job) and Suspended on the way. The attempt number is `status.restarts +
status.replans` (step.attempt_number); the Job of attempt k is `names.batch_job_name(job, k)`.

The modules, from the input to the output:

- `observation`: what the shell read, typed: the FineTuneJob, its ConfigMap and Service, and
  each attempt's Job with its pods (built by controller/observe.py from the raw objects);
- `pods`: what the pods of an attempt say (all running, which rank failed, who is stuck);
- `spec`: the spec with the operator's defaults, validated, and how it changed after the
  start; memoized in the caches the controller passes in;
- `step`: one decision in the making: the status being built and the actions so far;
- `start`: validate and plan a new job;
- `phases`: a started job: its children, its attempt's Job and pods, the transitions;
- `replan`: a started job whose spec.resources was edited: the move to its new layout;
- `cleanup`: a finished job: the TTL, the one rule of when its children go;
- `actions`: what the shell is asked to do;
- `machine`: the entry points, `decide`, `resync_due` and `child_rejected` (the API server
  refused a child).
"""
