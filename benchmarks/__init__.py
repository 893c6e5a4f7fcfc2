"""fiq-gym benchmark runners (installed as ``fiq_gym.benchmarks``); results land in ``results/``."""
