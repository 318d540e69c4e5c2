"""The stages of a self-training round, one module each (`main(argv)` plus a pure core)."""
