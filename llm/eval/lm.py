"""Our Transformer as an lm-evaluation-harness `LM`: loglikelihood, loglikelihood_rolling, generate_until.

Why a custom LM and not an export to a temporary HF directory scored by lm_eval's `hf` model: no copy of the
weights is written, every checkpoint layout we load is scored by our own forward (the one we train), and the
export already has its own parity tests against transformers (tests/llm/hf/).

No BOS, anywhere. Our pretraining documents are packed EOS-separated with no BOS (data_pipeline/encode.py
appends EOS to each document and adds nothing in front), so in training the token before a document's first
token is the previous document's EOS. `prefix_token_id` is therefore our EOS id: a document scored from an empty
context (loglikelihood_rolling, or loglikelihood with context "") is conditioned on exactly what preceded it in
training. A BOS the model never saw in front of text would be an untrained input and bias the first tokens'
scores; `tok_encode` likewise adds no special token (our tokenizers never do).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from llm.eval.checkpoint import EvalModel
from llm.train.progress import bar_progress


class ForgeLM(TemplateLM):
    """lm_eval's view of an `EvalModel`. A context + continuation longer than the model's seq_len keeps its last
    seq_len tokens (+1 target), as lm_eval's own `hf` model does; the continuation is scored whole unless it alone
    is longer than seq_len, when its last seq_len tokens are.

    Each request type shows a tqdm bar on a terminal and writes progress lines (done/total, rate, ETA; every ~30 s,
    llm/train/progress.py) to `progress_log` and, off a terminal, to stderr."""

    def __init__(self, loaded: EvalModel, batch_size: int = 16, progress_log: str | Path | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.batch_size = batch_size
        self.max_length = loaded.config.seq_len
        self.device_ = next(self.model.parameters()).device
        self.progress_log = progress_log

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        # EOS, not BOS: see the module docstring.
        return self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "path", "sentencepiece")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    @torch.no_grad()
    def score(self, pairs: list[tuple[list[int], list[int]]], desc: str = "scoring",
              disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context) in nats, whether the continuation is the greedy one) per pair.

        Longest first, `batch_size` at a time, right-padded: the model is causal, so padding after a sequence
        changes none of its logits.
        """
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        bar = bar_progress(desc, len(pairs), "request", self.progress_log, enabled=not disable_tqdm)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            seqs, spans = [], []
            for i in batch:
                context, continuation = pairs[i]
                if not continuation:
                    raise ValueError("an empty continuation has no log-likelihood")
                whole = (list(context) + list(continuation))[-(self.max_length + 1):]
                n = min(len(continuation), self.max_length)  # all of it unless it alone outgrows the window
                seqs.append(whole[:-1])
                spans.append((len(whole) - 1 - n, whole[-n:]))
            width = max(len(s) for s in seqs)
            tokens = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=self.device_)
            logprobs = F.log_softmax(self.model(tokens).float(), dim=-1)
            for row, i in enumerate(batch):
                first, target = spans[row]
                lp = logprobs[row, first:first + len(target)]
                target_t = torch.tensor(target, device=self.device_)
                out[i] = (lp.gather(-1, target_t[:, None]).sum().item(), bool((lp.argmax(-1) == target_t).all()))
            bar.update(len(batch))
        bar.close()
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results = self.score([(ctx, cont) for _, ctx, cont in requests], "loglikelihood", disable_tqdm)
        for (key, _, _), result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text: disjoint windows of seq_len predicted tokens (lm_eval's rolling
        windows with one token of context), the first conditioned on EOS."""
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for w in get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length, 1):
                windows.append(make_disjoint_window(w))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (ll, _) in zip(owner, self.score(windows, "loglikelihood_rolling (windows)", disable_tqdm)):
            totals[n] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with `do_sample`/`temperature`) continuations, cut at the first `until` string."""
        out = []
        bar = bar_progress("generate_until", len(requests), "request", self.progress_log, enabled=not disable_tqdm)
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", 256))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            prompt = ([self.prefix_token_id] + self.tok_encode(context))[-max(1, self.max_length - max_new):]
            ids = self.model.generate(torch.tensor([prompt], device=self.device_), max_new,
                                      temperature=temperature, eos_id=self.eot_token_id)[0, len(prompt):].tolist()
            if self.eot_token_id in ids:
                ids = ids[:ids.index(self.eot_token_id)]
            text = self.tok_decode(ids)
            for stop in until:
                if stop and stop in text:
                    text = text[:text.index(stop)]
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
            bar.update(1)
        bar.close()
        return out
