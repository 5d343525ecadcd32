"""robust_prompt: instruction-robustness evaluation and soft-prompt alignment for T5 models."""

__version__ = "0.1.0"
