"""The trainer's tests train tiny models in this process and in torchrun ranks
(tests/support/tiny.py holds their ingredients)."""

from __future__ import annotations

from tests.support.tiny import one_torch_thread  # noqa: F401  (autouse: one torch thread)
