"""The tests, laid out like the source: a test module at the mirrored path of the module it
tests (tests/finetune_operator/planner/test_memory.py for
operator/finetune_operator/planner/memory.py), see docs/testing.md. A package, so that
tests/finetune_operator and its like never shadow the packages they test."""
