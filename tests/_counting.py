"""Count a deepinv operator's forward and adjoint calls in a test (shared by the per-step cost tests)."""

from __future__ import annotations


def count_operator_calls(monkeypatch, op) -> dict[str, int]:
    """Wrap ``op.A`` and ``op.A_adjoint`` so that every call adds one to the returned dict's entry (live counts)."""
    calls = {"A": 0, "A_adjoint": 0}
    for name in calls:
        f = getattr(op, name)

        def counted(v, *a, _f=f, _n=name, **k):
            calls[_n] += 1
            return _f(v, *a, **k)

        monkeypatch.setattr(op, name, counted)
    return calls
