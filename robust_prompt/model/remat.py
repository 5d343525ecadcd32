"""Rematerialisation (gradient checkpointing) of transformer layers: the one place for policies.

A policy says what each layer keeps of its forward pass for the backward pass; the rest is
recomputed there, one layer at a time:

- `"none"`: everything is kept (no recomputation: fastest, most memory). The default: small models
  fit without it, and it is what every model ran before policies existed.
- `"full"`: nothing but the layer's inputs (`jax.checkpoint_policies.nothing_saveable`). The
  activation memory of `L` layers becomes `L` layer inputs `[B, T, H]` plus one layer's
  internals; the forward pass runs twice.
- `"dots"`: the outputs of matmuls without batch dimensions
  (`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`), i.e. the q/k/v/out and MLP
  projections; norms, activations, softmax and attention's batched `[B, N, T, T]` products are
  recomputed. Less recomputation than "full", more memory (the `[B, T, F]` MLP activations stay).

The policy is a runtime option, not architecture (the parameters and every number are the same
under each): it is a field of the model configs (`T5Config.remat_policy`,
`DecoderConfig.remat_policy`) only so that gin can bind it beside `dtype` and jit sees it as
static; checkpoints do not store it (`JsonConfig.RUNTIME_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

POLICIES = ("none", "full", "dots")
DEFAULT_POLICY = "none"

_DESCRIPTIONS = {
  "none": "keep every activation",
  "full": "recompute each layer, keep only its inputs",
  "dots": "keep only the matmul outputs without batch dims",
}


def check_policy(name: object, owner: str = "remat_policy") -> str:
  """Returns `name` if it is a policy name, else raises a ValueError listing the policies.

  Args:
    name: the value to check (from gin, JSON or a caller).
    owner: what set it, for the message (e.g. "T5Config.remat_policy").
  """
  if not isinstance(name, str) or name not in POLICIES:
    choices = "; ".join(f"{p!r}: {_DESCRIPTIONS[p]}" for p in POLICIES)
    raise ValueError(f"{owner}={name!r} is not a rematerialisation policy; use one of: {choices}")
  return name


def jax_policy(name: str) -> Callable[..., bool] | None:
  """The `jax.checkpoint` policy of a policy name (None for "none": no checkpointing)."""
  check_policy(name)
  if name == "none":
    return None
  if name == "full":
    return jax.checkpoint_policies.nothing_saveable
  return jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def remat_layer(layer_cls: type[nn.Module], policy: str) -> type[nn.Module]:
  """`layer_cls` itself for "none", else its `nn.remat` under the policy.

  The wrapped class has the same attributes, parameter names and results; only what the backward
  pass keeps changes. Every call argument of the wrapped class is traced (`jax.checkpoint`), so
  call it with arrays (or None) only, never with Python flags that steer tracing.
  """
  if check_policy(policy) == "none":
    return layer_cls
  # prevent_cse (the default) is needed: the layers are an unrolled Python loop under one jit,
  # where XLA would otherwise merge the recomputation back into the forward pass.
  return nn.remat(layer_cls, policy=jax_policy(policy))
