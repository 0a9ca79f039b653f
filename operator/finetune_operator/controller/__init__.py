"""The operator's controller: the shell around the pure lifecycle.

kopf's watch handlers (main.py) only record what they saw and say which job is due; this
package does the rest, with the API client's blocking calls in a pool of threads:

- `watch`: which watch events are worth a reconcile;
- `schedule`: when each job's work is due (reconcile, resync, progress read), pure;
- `workloop`: runs the due work in threads and books the outcome back;
- `retry`: how soon a failed reconcile is tried again;
- `reconcile`: one reconcile: read, decide (lifecycle/), act, write the status, post Events;
- `observe`: the lifecycle's typed input, built from the raw Job and Pod objects;
- `caches`: the memo of parsed specs one operator process keeps and lends the lifecycle;
- `kube`: the only door to the API server (reads, creates, deletes, status, Events);
- `progress`: copy rank 0's training progress into status.progress.
"""
