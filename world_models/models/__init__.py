"""The networks: V (vae), M (mdrnn) and C (controller), each with its config beside it."""
