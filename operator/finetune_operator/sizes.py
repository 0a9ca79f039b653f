"""Model size strings (125M, 7.5B, 70B, 1.2T or plain integers) and Kubernetes resource
quantities (96, 500m, 16Gi)."""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_EVEN, Decimal

from finetune_operator.bounds import PARAMETERS, QUANTITIES, QUANTITY_FIX
from finetune_operator.caps import echo

GIB = 1024**3

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Parse a parameter count. Raises ValueError with a message fit for the user."""
    if isinstance(value, bool):  # YAML's true is an int to Python; callers catch ValueError
        raise ValueError(f"must be a size like 125M, 7.5B or 70B (got {value})")  # noqa: TRY004
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be a positive parameter count (got {echo(value)})")
        _check_bound(value)
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"must be a size like 125M, 7.5B, 70B or an integer (got {echo(value)})")
    # Decimal, not float: "999...9T" would overflow a float (and round(inf) raise).
    exact = Decimal(match.group(1)) * _SUFFIX[match.group(2).upper()]
    _check_bound(exact)
    count = int(exact.to_integral_value(ROUND_HALF_EVEN))
    if count <= 0:
        raise ValueError(f"must be a positive parameter count (got {echo(value)})")
    return count


def _check_bound(count: int | Decimal) -> None:
    problem = PARAMETERS.problem(count, format_size)
    if problem:
        raise ValueError(problem)


def format_size(count: int) -> str:
    """7_500_000_000 -> '7.5B'."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


def format_bytes(n: float) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_quantity(value: str, field: str | None = None) -> Decimal:
    """A resource quantity read the way Kubernetes reads it (the client's own parser), so
    that what validates here is what the API server accepts, and no larger than the bound
    of spec.resources.<field> (bounds.QUANTITIES) when given. Raises ValueError with a
    message fit for the user."""
    from kubernetes.utils import parse_quantity as kubernetes_quantity

    example = "e.g. 8, 500m, 16Gi or 1.5Ti"
    # The client strips blanks the API server refuses: "96 cores" is not 96.
    if value != value.strip():
        raise ValueError(f"is not a Kubernetes quantity (got {echo(value)}); {example}")
    try:
        quantity = kubernetes_quantity(value)
    except (ValueError, ArithmeticError):  # ArithmeticError: decimal's overflow, say
        raise ValueError(f"is not a Kubernetes quantity (got {echo(value)}); {example}") from None
    if quantity <= 0:
        raise ValueError(f"must be positive (got {echo(value)})")
    if field in QUANTITIES:
        bound, show = QUANTITIES[field]
        problem = bound.problem(quantity, show, QUANTITY_FIX)
        if problem:
            raise ValueError(problem)
    return quantity


def format_gib(n: int) -> str:
    """Bytes as a memory quantity in whole Gi, rounded up: what a person writes and reads
    in a pod spec (68719476736 -> '64Gi')."""
    return f"{math.ceil(n / GIB)}Gi"
