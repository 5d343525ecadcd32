"""The offline demo: a toy suite, a tiny instruction-tuned T5 and the before/after pipeline.

`robust-prompt demo` (robust_prompt/cli/demo.py) runs `pipeline.run_demo`; the model under
`assets/model/` was built by `scripts/build_demo_model.py` (library code in `tuning.py` and
`build.py`). See docs/demo.md.
"""
