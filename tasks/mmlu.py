"""Registers the mmlu SeqIO tasks (every task x instruction) and mixtures on import.

Settings come from the environment (ROBUST_PROMPT_DATA_DIR, ...; see robust_prompt_tasks/__init__).
Names: docs/tasks.md. Importing twice is harmless.
"""

from robust_prompt_tasks import register_from_environment

REGISTERED = register_from_environment("mmlu")
