"""`robust-prompt score` end to end, against PyTorch `T5ForConditionalGeneration` log-likelihoods."""

import json

import numpy as np
import pytest

from robust_prompt.cli import main as cli_main

# Varied input lengths (two length buckets), numbers of targets (1 to 5) and target lengths,
# including an empty target (scored as EOS alone, as HF's labels would be).
RECORDS = [
  {"inputs": "What is the capital of France?", "targets": ["Paris", "London", "Rome"], "id": 0},
  {"inputs": "hi", "targets": ["hello there my friend, how are you doing today?"]},
  {
    "inputs": "A much longer input sentence that goes on and on about many different things, so "
    "that it lands in another length bucket than the short ones do.",
    "targets": ["yes", "no"],
    "meta": {"k": [1, 2]},
  },
  {"inputs": "Translate to German: the house is small.", "targets": ["Das Haus ist klein.", ""]},
  {"inputs": "Pick one", "targets": ["a", "b", "c", "d", "a longer option than the others"]},
]


def _write_jsonl(path, records, blank_lines=True):
  lines = [json.dumps(r) for r in records]
  if blank_lines:
    lines.insert(2, "")
  path.write_text("\n".join(lines) + "\n")
  return path


def _read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def _score(model_dir, in_path, out_path, *extra, mesh="data=1,model=1"):
  # One device by default: the 8 fake CPU devices share 2 cores, and every extra shape compiles.
  argv = ["score", "--model", str(model_dir), "--input", str(in_path), "--output", str(out_path)]
  argv += ["--batch_size", "2", "--no_progress"] + (["--mesh", mesh] if mesh else [])
  return cli_main.main([*argv, *extra])


def _torch_scores(model_dir, records, prompt=None):
  """Reference: sum over HF `labels` (EOS included) of log-softmax(logits)[label]."""
  import torch
  import transformers

  model = transformers.T5ForConditionalGeneration.from_pretrained(model_dir).eval()
  tok = transformers.T5TokenizerFast.from_pretrained(model_dir)
  out = []
  with torch.inference_mode():
    for record in records:
      ids = torch.tensor([tok(record["inputs"]).input_ids])
      kwargs = {"input_ids": ids}
      if prompt is not None:
        embeds = model.get_input_embeddings()(ids)
        p = torch.from_numpy(prompt)[None]
        kwargs = {
          "inputs_embeds": torch.cat([p, embeds], dim=1),
          "attention_mask": torch.ones((1, p.shape[1] + ids.shape[1]), dtype=torch.long),
        }
      scores, counts = [], []
      for target in record["targets"]:
        labels = torch.tensor([tok(target).input_ids])
        logits = model(**kwargs, labels=labels).logits
        lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None])[..., 0]
        scores.append(float(lp.sum()))
        counts.append(labels.shape[1])
      out.append((scores, counts))
  return out


@pytest.fixture(scope="module")
def hf_1_1(tmp_path_factory, spiece_path):
  from conftest import make_tiny_hf_t5

  return make_tiny_hf_t5(tmp_path_factory.mktemp("hf_1_1_score"), "t5_1_1", spiece_path, seed=3)


def _check_against_torch(rows, reference, records=RECORDS):
  assert len(rows) == len(records)
  for row, record, (scores, counts) in zip(rows, records, reference):
    # The input object comes back unchanged (order kept), plus scores and num_tokens.
    assert {k: row[k] for k in record} == record
    assert row["num_tokens"] == counts
    np.testing.assert_allclose(row["scores"], scores, atol=1e-3, rtol=0)


def test_scores_match_pytorch_in_input_order(tiny_hf_dir, tmp_path):
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS)
  out_path = tmp_path / "sub" / "out.jsonl"
  assert _score(tiny_hf_dir, in_path, out_path) == 0
  rows = _read_jsonl(out_path)
  _check_against_torch(rows, _torch_scores(tiny_hf_dir, RECORDS))
  assert not list(out_path.parent.glob(".*tmp"))  # the atomic write left no temporary file


def test_mesh_data_2_model_4_gives_the_same_scores(hf_1_1, tmp_path):
  # Batch split over 2 data shards, vocab / heads / MLP over 4 model shards: the same scores as
  # PyTorch (which the single-device run matches too, in the test above).
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS)
  assert _score(hf_1_1, in_path, tmp_path / "b.jsonl", mesh="data=2,model=4") == 0
  _check_against_torch(_read_jsonl(tmp_path / "b.jsonl"), _torch_scores(hf_1_1, RECORDS))


def _dot_lhs_shapes(jaxpr) -> list[tuple[int, ...]]:
  """Shapes of the left operand of every dot_general in `jaxpr`, nested jaxprs (jit, ...) too."""
  import jax

  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      shapes.append(tuple(eqn.invars[0].aval.shape))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          shapes += _dot_lhs_shapes(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          shapes += _dot_lhs_shapes(sub)
  return shapes


@pytest.mark.parametrize("with_prompt", [False, True])
def test_cross_attention_projects_each_input_once(hf_1_1, with_prompt):
  """The decoder's cross-attention keys/values come from the [B, T, H] encoder output, not from
  a per-target copy [R, T, H]: with O targets an input's projection runs once, not O times."""
  import jax

  from robust_prompt.checkpoints.resolve import load_model
  from robust_prompt.eval.scorer import Scorer
  from robust_prompt.model import prompted

  loaded = load_model(str(hf_1_1))
  h, layers = loaded.config.d_model, loaded.config.num_decoder_layers
  prompt = np.zeros((3, h), np.float32) if with_prompt else None
  model = prompted.for_config(loaded.config)
  scorer = Scorer(model, loaded.params, loaded.vocab, prompt=prompt)
  b, t, r, s = 2, 16, 8, 4  # B inputs of T tokens; R = 4 targets each, of S tokens
  t_enc = t + (3 if with_prompt else 0)
  ids = np.ones((b, t), np.int32)
  pairs = np.ones((r, s), np.int32)
  group_index = np.repeat(np.arange(b, dtype=np.int32), r // b)
  batch = dict(
    input_ids=ids, input_mask=ids, target_ids=pairs, target_mask=pairs, target_index=group_index
  )
  jaxpr = jax.make_jaxpr(scorer._fn)(scorer.params, scorer.prompt, batch)
  shapes = _dot_lhs_shapes(jaxpr.jaxpr)
  assert shapes.count((b, t_enc, h)) >= 2 * layers  # key and value, each decoder layer
  assert (r, t_enc, h) not in shapes


def test_soft_prompt_matches_pytorch_inputs_embeds(hf_1_1, tmp_path):
  prompt = np.random.default_rng(0).normal(0, 0.5, (3, 32)).astype(np.float32)
  np.save(tmp_path / "p.npy", prompt)
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:3])
  out = tmp_path / "out.jsonl"
  assert _score(hf_1_1, in_path, out, "--prompt", str(tmp_path / "p.npy")) == 0
  _check_against_torch(_read_jsonl(out), _torch_scores(hf_1_1, RECORDS[:3], prompt), RECORDS[:3])


@pytest.mark.parametrize(
  "shape, message",
  [
    ((0, 32), "empty prompt"),
    ((3, 16), "does not match the model's d_model 32"),
    ((32,), "[P, H]"),
  ],
)
def test_bad_prompt_is_a_clear_error(hf_1_1, tmp_path, capsys, shape, message):
  np.save(tmp_path / "p.npy", np.zeros(shape, np.float32))
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
  out = tmp_path / "out.jsonl"
  assert _score(hf_1_1, in_path, out, "--prompt", str(tmp_path / "p.npy")) == 1
  err = capsys.readouterr().err
  assert "--prompt" in err and message in err
  assert not out.exists()


def test_missing_prompt_file(hf_1_1, tmp_path, capsys):
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
  assert _score(hf_1_1, in_path, tmp_path / "o.jsonl", "--prompt", str(tmp_path / "no.npy")) == 1
  assert "no such prompt file" in capsys.readouterr().err


BAD_LINES = [
  ('{"inputs": "x", "targets": ["a"]', "not valid JSON"),
  ('{"targets": ["a"]}', 'missing key "inputs"'),
  ('{"inputs": "x"}', 'missing key "targets"'),
  ('{"inputs": 3, "targets": ["a"]}', '"inputs" must be a string'),
  ('{"inputs": "x", "targets": "a"}', "wrap it as"),
  ('{"inputs": "x", "targets": []}', '"targets" is empty'),
  ('{"inputs": "x", "targets": ["a", 2]}', '"targets"[1] must be a string'),
  ('["inputs", "targets"]', "expected a JSON object"),
]


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_bad_input_line_names_file_and_line(tmp_path, capsys, line, message):
  good = json.dumps(RECORDS[0])
  in_path = tmp_path / "in.jsonl"
  in_path.write_text("\n".join([good, good, line, good]) + "\n")
  out = tmp_path / "out.jsonl"
  # The model does not even exist: input lines are validated before anything is loaded.
  assert _score(tmp_path / "no_model", in_path, out) == 1
  err = capsys.readouterr().err
  assert f"{in_path}:3: " in err and message in err
  assert "Traceback" not in err
  assert not out.exists()


def test_all_bad_lines_are_listed(tmp_path, capsys):
  in_path = tmp_path / "in.jsonl"
  in_path.write_text('{"inputs": "x", "targets": []}\n{}\n{"inputs": "y", "targets": ["z"]}\n')
  assert _score(tmp_path / "no_model", in_path, tmp_path / "o.jsonl") == 1
  err = capsys.readouterr().err
  assert "2 bad line(s)" in err and f"{in_path}:1:" in err and f"{in_path}:2:" in err


def test_missing_or_empty_input(tmp_path, capsys):
  assert _score(tmp_path / "m", tmp_path / "absent.jsonl", tmp_path / "o.jsonl") == 1
  assert "no such file" in capsys.readouterr().err
  (tmp_path / "empty.jsonl").write_text("\n\n")
  assert _score(tmp_path / "m", tmp_path / "empty.jsonl", tmp_path / "o.jsonl") == 1
  assert "no examples" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
  out = tmp_path / "out.jsonl"
  assert _score(tmp_path / "no_such_model", in_path, out) == 1
  err = capsys.readouterr().err
  assert "could not load --model" in err and "no_such_model" in err
  assert not out.exists()


def test_output_must_not_be_the_input(tmp_path, capsys):
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
  assert _score(tmp_path / "m", in_path, in_path) == 1
  assert "is the input file" in capsys.readouterr().err


TINY_T5X_BINDINGS = [
  "--gin.T5Config.vocab_size=32128",
  "--gin.T5Config.d_model=4",
  "--gin.T5Config.num_heads=2",
  "--gin.T5Config.head_dim=2",
  "--gin.T5Config.d_ff=8",
  "--gin.T5Config.num_encoder_layers=2",
  "--gin.T5Config.num_decoder_layers=2",
  "--gin.T5Config.relative_attention_num_buckets=4",
  "--gin.T5Config.relative_attention_max_distance=8",
  "--gin.T5Config.feed_forward_proj='gated-gelu'",
  "--gin.T5Config.tie_word_embeddings=False",
  "--gin.MODEL_CONFIG=@T5Config()",
]


def test_t5x_checkpoint_with_gin_config(t5x_tiny_checkpoint, spiece_path, tmp_path, capsys):
  in_path = _write_jsonl(tmp_path / "in.jsonl", RECORDS[:2])
  out = tmp_path / "out.jsonl"
  # Without an architecture the T5X checkpoint cannot be used: a clear error says what to pass.
  assert _score(t5x_tiny_checkpoint, in_path, out, "--vocab", str(spiece_path)) == 1
  assert "--gin_file" in capsys.readouterr().err
  # No --mesh: every device (8 fake CPUs) on the data axis; batch_size 2 is rounded up to 8.
  args = ("--vocab", str(spiece_path), *TINY_T5X_BINDINGS)
  assert _score(t5x_tiny_checkpoint, in_path, out, *args, mesh=None) == 0
  rows = _read_jsonl(out)
  assert [r["num_tokens"] for r in rows] == [[2, 2, 2], [12]]
  assert all(np.isfinite(s) and s < 0 for r in rows for s in r["scores"])
