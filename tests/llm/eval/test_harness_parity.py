"""lm_eval's numbers on the bundled tasks equal our own, computed with the model directly (tests/llm/eval/helpers)."""
from __future__ import annotations

import json
import pytest
from lm_eval.api.instance import Instance

from llm.eval.checkpoint import load_eval_model
from llm.eval.lm import ForgeLM
from llm.eval.run import evaluate
from llm.eval.tasks import TASK_DIR
from tests.llm.eval.helpers import continuation_loglikelihood, perplexity_metrics, rolling_loglikelihood

# fp32 sums of a few thousand log-probabilities, batched and padded by the harness, one sequence at a time here.
REL_TOL = 1e-5
N_DOCS, N_ITEMS = 2, 40


def _rows(name, n):
    return [json.loads(line) for line in (TASK_DIR / name).read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def loaded(eval_checkpoint):
    return load_eval_model(eval_checkpoint)


def test_rolling_perplexity_equals_ours_conditioned_on_eos(eval_checkpoint, loaded):
    res = evaluate(eval_checkpoint, ["python_docs_ppl"], limit=N_DOCS, batch_size=7)["results"]["python_docs_ppl"]
    docs = [d["text"] for d in _rows("python_docs_heldout.jsonl", N_DOCS)]
    tok, model, seq_len = loaded.tokenizer, loaded.model, loaded.config.seq_len
    assert all(len(tok.encode(t)) > 3 * seq_len for t in docs)  # several windows each, a partial last one
    ours = perplexity_metrics([rolling_loglikelihood(model, tok.encode(t), tok.eos_id, seq_len) for t in docs], docs)
    for metric, value in ours.items():
        assert res[f"{metric},none"] == pytest.approx(value, rel=REL_TOL), metric


def test_prefix_is_eos_and_nothing_is_added(loaded):
    lm = ForgeLM(loaded)
    tok = loaded.tokenizer
    assert lm.prefix_token_id == lm.eot_token_id == tok.eos_id != tok.bos_id
    assert lm.tok_encode("def f():\n    return 1") == tok.encode("def f():\n    return 1")
    assert tok.bos_id not in lm.tok_encode(" a line ")
    # A short text, so the first tokens (the ones the prefix conditions) weigh: ours with EOS, not with BOS.
    text = "The tutorial ends here."
    (got,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    ids = tok.encode(text)
    assert got == pytest.approx(rolling_loglikelihood(loaded.model, ids, tok.eos_id, loaded.config.seq_len),
                                rel=REL_TOL)
    assert abs(got - rolling_loglikelihood(loaded.model, ids, tok.bos_id, loaded.config.seq_len)) > 1e-3


def test_multiple_choice_accuracy_equals_our_argmax(eval_checkpoint, loaded):
    res = evaluate(eval_checkpoint, ["python_docs_next_line"], limit=N_ITEMS)["results"]["python_docs_next_line"]
    items = _rows("python_docs_next_line.jsonl", N_ITEMS)
    tok, model = loaded.tokenizer, loaded.model
    hits = hits_norm = 0
    for item in items:
        lls = [continuation_loglikelihood(model, tok, item["context"], c, loaded.config.seq_len)
               for c in item["choices"]]
        hits += max(range(len(lls)), key=lls.__getitem__) == item["label"]
        norm = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        hits_norm += max(range(len(norm)), key=norm.__getitem__) == item["label"]
    assert res["acc,none"] == pytest.approx(hits / N_ITEMS, abs=1e-12)
    assert res["acc_norm,none"] == pytest.approx(hits_norm / N_ITEMS, abs=1e-12)


def test_loglikelihoods_of_the_lm_equal_ours(loaded):
    """Per request, not only the aggregates: every choice's log-likelihood and its greedy flag."""
    lm = ForgeLM(loaded, batch_size=3)
    items = _rows("python_docs_next_line.jsonl", 4)
    pairs = [lm._encode_pair(i["context"], c) for i in items for c in i["choices"]]
    got = lm.score(pairs, disable_tqdm=True)
    want = [continuation_loglikelihood(loaded.model, loaded.tokenizer, i["context"], c,
                                    loaded.config.seq_len)
            for i in items for c in i["choices"]]
    for (ll, _), w in zip(got, want):
        assert ll == pytest.approx(w, rel=REL_TOL)
