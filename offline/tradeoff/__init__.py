"""The tradeoff lab: measure candidate model and serving settings, price them for a workload.

Training compute and inference compute trade against each other (more factors cost more to
fit and more to score; precomputed lists move serving work into the retrain). A sweep fits,
scores and serves every candidate on the shop's own data (`measure`), prices the measured
figures for the operator's traffic (`costing`), and keeps everything (`store`).
"""
