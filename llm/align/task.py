"""The bundled task with a programmatic checker: sort a string of distinct digits ("5183" → "1358").

No human preference data can be downloaded here, so every alignment stage is measured against `check`:
- base text: prompts followed by a random permutation of their digits (the format, not the task);
- SFT demonstrations are imperfect: with probability `demo_error_rate` the answer is corrupted (two
  adjacent digits swapped, a digit dropped, replaced or inserted), so a model that imitates them has headroom;
- reward-model / DPO pairs: two candidate answers drawn like the demonstrations, labelled by the checker
  (pairs the checker cannot tell apart are dropped);
- held-out evaluation prompts are disjoint from every training prompt.

All generation is a pure function of (TaskConfig, seed). The tokenizer is a character-level SentencePiece
model trained on task text (digits are single tokens, so the checker's unit is the model's unit).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from llm.align.sections import TaskConfig

DIGITS = "0123456789"
DATA_FILES = ("base", "sft_train", "sft_eval", "pairs_train", "pairs_eval", "prompts_eval")
"""The jsonl files `generate_task_data` writes, by name (<out_dir>/data/<name>.jsonl)."""


def check(prompt: str, response: str) -> bool:
    """True iff `response` is the digits of `prompt` in ascending order (surrounding whitespace ignored)."""
    return response.strip() == "".join(sorted(prompt.strip()))


def sort_reward(prompts: list, completions: list[str], **fields) -> list[float]:
    """The checker as a reward function (llm/align/reward_functions.py's convention): 1.0 for the prompt's digits in
    ascending order, else 0.0. A prompt given as messages is read from its last turn."""
    return [float(check(p if isinstance(p, str) else p[-1]["content"], c)) for p, c in zip(prompts, completions)]


def corrupt(answer: str, rng: random.Random, kinds: list[str]) -> str:
    """A wrong answer near `answer`: 'swap' two adjacent digits, 'drop' one, 'replace' one by a digit not in the
    answer or 'insert' such a digit, the last two kept sorted (wrong content, right order: only a reader of the
    prompt can tell; 'insert' shows the RM over-long answers, PPO's first exploit without it)."""
    kind = rng.choice(kinds)
    i = rng.randrange(len(answer) - 1)
    if kind in ("replace", "insert"):
        new = rng.choice([d for d in DIGITS if d not in answer])
        return "".join(sorted(answer[:i] + new + answer[i + (kind == "replace"):]))
    if kind == "swap":
        return answer[:i] + answer[i + 1] + answer[i] + answer[i + 2:]
    if kind == "drop":
        return answer[:i] + answer[i + 1:]
    raise ValueError(f"unknown corruption {kind!r}")


def _prompts(cfg: TaskConfig, rng: random.Random, n: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        p = "".join(rng.sample(DIGITS, rng.randint(cfg.min_len, cfg.max_len)))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _demo(cfg: TaskConfig, prompt: str, rng: random.Random) -> str:
    answer = "".join(sorted(prompt))
    return corrupt(answer, rng, cfg.corruptions) if rng.random() < cfg.demo_error_rate else answer


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def generate_task_data(cfg: TaskConfig, out_dir: str | Path, seed: int) -> dict[str, str]:
    """Write the task's jsonl files under out_dir; returns {name: path}.

    Files (llm/align/formats.py's formats): base.jsonl {text}; sft_train/sft_eval.jsonl {prompt, completion};
    pairs_train/pairs_eval.jsonl {prompt, chosen, rejected}; prompts_eval.jsonl {prompt} (held out from everything
    else).
    """
    out = Path(out_dir)
    rng = random.Random(seed)
    evals = _prompts(cfg, rng, cfg.n_eval_prompts, set())
    held = set(evals)
    train = _prompts(cfg, rng, cfg.n_train, held)
    dev = _prompts(cfg, rng, cfg.n_dev, held | set(train))
    files = {name: out / f"{name}.jsonl" for name in DATA_FILES}
    base_rows = []
    for p in train + dev:
        perm = list(p)
        rng.shuffle(perm)
        # "prompt response": the text that encode(prompt part) + encode(response part) tokenizes like.
        base_rows.append({"text": cfg.template_prompt.format(prompt=p) + " " + cfg.template_response.format(
            response="".join(perm))})
    _write_jsonl(files["base"], base_rows)
    _write_jsonl(files["sft_train"], [{"prompt": p, "completion": _demo(cfg, p, rng)} for p in train])
    _write_jsonl(files["sft_eval"], [{"prompt": p, "completion": _demo(cfg, p, rng)} for p in dev])

    def pairs(prompts: list[str]) -> list[dict]:
        rows = []
        for p in prompts:
            a, b = _demo(cfg, p, rng), _demo(cfg, p, rng)
            ca, cb = check(p, a), check(p, b)
            if ca != cb:  # the checker is the labeller; a tie carries no preference
                rows.append({"prompt": p, "chosen": a if ca else b, "rejected": b if ca else a})
        return rows

    _write_jsonl(files["pairs_train"], pairs(train))
    _write_jsonl(files["pairs_eval"], pairs(dev))
    _write_jsonl(files["prompts_eval"], [{"prompt": p} for p in evals])
    return {k: str(v) for k, v in files.items()}


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_task_tokenizer(base_jsonl: str | Path, model_prefix: str | Path, seed: int = 0) -> Path:
    """Character-level SentencePiece model on the task text (4 specials + 256 byte pieces + the characters)."""
    from data_pipeline.tokenizer import train_tokenizer
    texts = [r["text"] for r in read_jsonl(base_jsonl)]
    # For the 'char' model the vocabulary is the characters seen; vocab_size is only an upper bound.
    return train_tokenizer(texts, model_prefix, vocab_size=512, model_type="char", seed=seed)
