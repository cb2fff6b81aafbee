"""The benchmarks (scripts; a package so that `benchmarks.*` imports find these and not the top-level
`benchmarks` package opacus 1.6 installs into site-packages)."""
