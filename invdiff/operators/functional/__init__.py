"""Pure numerical kernels behind the operator classes (no state, no argument checks beyond their own)."""
