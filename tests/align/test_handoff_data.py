"""Chat template, prompt masking, packing, the checker, the stage checkpoint's checks and the config loader."""
import pytest
import torch

from llm.align import handoff
from llm.align.template import pair_batch, sft_batch, sft_example
from llm.align.config import AlignConfig, TaskConfig, load_align_config
from llm.align.losses import IGNORE_INDEX
from llm.align.task import check, generate_task_data, read_jsonl, train_task_tokenizer
from llm.config import ConfigError, ModelConfig
from llm.model import Transformer

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("task")
    task = TaskConfig(n_train=200, n_dev=20, n_eval_prompts=20)
    files = generate_task_data(task, out, seed=0)
    from data_pipeline.tokenizer import Tokenizer
    tok = Tokenizer(train_task_tokenizer(files["base"], out / "tok"))
    return task, files, tok, out


def test_checker_and_data_files(task_files):
    task, files, _, _ = task_files
    assert check("5183", "1358") and not check("5183", "1385") and not check("5183", "135")
    evals = {r["prompt"] for r in read_jsonl(files["prompts_eval"])}
    assert not evals & {r["prompt"] for r in read_jsonl(files["sft_train"])}
    for r in read_jsonl(files["pairs_train"]):
        assert check(r["prompt"], r["chosen"]) and not check(r["prompt"], r["rejected"])
    demos = read_jsonl(files["sft_train"])
    wrong = sum(not check(r["prompt"], r["completion"]) for r in demos) / len(demos)
    assert 0.35 < wrong < 0.65  # demo_error_rate 0.5


def test_template_tokenizes_like_the_text_and_masks_the_prompt(task_files):
    task, _, tok, _ = task_files
    tokens, targets = sft_example(tok, task, "5183", "1358")
    assert tokens == tok.encode("sort 5183: 1358") + [tok.eos_id]
    n_prompt = len(tok.encode("sort 5183:"))
    assert targets[:n_prompt - 1] == [IGNORE_INDEX] * (n_prompt - 1)
    assert targets[n_prompt - 1:] == tokens[n_prompt:]
    inputs, tgts = sft_batch([(tokens, targets), sft_example(tok, task, "12", "12")], seq_len=32)
    assert inputs.shape == tgts.shape and (tgts[1] == IGNORE_INDEX).sum() > (tgts[0] == IGNORE_INDEX).sum()
    packed_in, packed_t = sft_batch([(tokens, targets)] * 3, seq_len=40, packing=True)
    assert packed_in.shape[0] == 2 and int((packed_t != IGNORE_INDEX).sum()) == 3 * (len(tokens) - n_prompt)
    b = pair_batch(tok, task, [{"prompt": "5183", "chosen": "1358", "rejected": "135"}])
    assert b.tokens[0, b.last_index[0]] == tok.eos_id and b.tokens[1, b.last_index[1]] == tok.eos_id


def test_handoff_round_trip_and_refusals(task_files, tmp_path):
    _, files, tok, out = task_files
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_ff=64, vocab_size=320, seq_len=32)
    model = Transformer(cfg, seed=1)
    handoff.save_stage(tmp_path / "sft", "sft", model, tok.model_path, metrics={"x": 1})
    loaded, info = handoff.load_stage(tmp_path / "sft", "lm", tok.fingerprint())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    rm, _ = handoff.load_stage(tmp_path / "sft", "reward")  # SFT body, fresh head
    assert torch.equal(rm.body.tok_embeddings.weight, model.tok_embeddings.weight)
    with pytest.raises(handoff.HandoffError, match="tokenizer mismatch"):
        handoff.load_stage(tmp_path / "sft", "lm", "0" * 64)
    with pytest.raises(handoff.HandoffError, match="shape mismatch"):
        handoff.load_stage(tmp_path / "sft", "lm", model_cfg=ModelConfig(n_layers=2, d_model=32, n_heads=2,
                                                                         d_ff=64, vocab_size=320, seq_len=32))
    handoff.save_stage(tmp_path / "rm", "rm", rm, tok.model_path)
    with pytest.raises(handoff.HandoffError, match="reward model"):
        handoff.load_stage(tmp_path / "rm", "lm")
    with pytest.raises(handoff.HandoffError, match="not a complete stage"):
        handoff.load_stage(tmp_path / "missing", "lm")
    # A corrupted checkpoint whose tensors do not fit its recorded shape.
    state = model.state_dict()
    state["tok_embeddings.weight"] = torch.zeros(10, 32)
    torch.save(state, tmp_path / "sft" / "model.pt")
    with pytest.raises(handoff.HandoffError, match="tok_embeddings.weight"):
        handoff.load_stage(tmp_path / "sft", "lm")


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'ppo.beta'"):
        load_align_config(None, ["ppo.betta=0.1"])
    with pytest.raises(ConfigError, match="mini_batch"):
        load_align_config(None, ["ppo.mini_batch=48"])
    with pytest.raises(ConfigError, match="zero_stage"):
        load_align_config(None, ["sft.optim.zero_stage=3"])
    cfg = load_align_config(None, [f"out_dir={tmp_path}"])
    assert isinstance(cfg, AlignConfig) and cfg.stage_dir("rm") == f"{tmp_path}/rm"


def test_reward_stats_refuse_a_checkpoint_that_is_not_a_reward_model():
    # The one check PPO, the grpo_rloo stage and the pre-flight make of an RM key (once three copies).
    sft = handoff.StageInfo("sft", "lm", {}, "f", 10)
    with pytest.raises(handoff.HandoffError,
                       match=r"^ppo.reward_model=/x is a lm checkpoint \(sft\), not a reward model$"):
        handoff.reward_stats(sft, "ppo.reward_model", "/x")
    rm = handoff.StageInfo("rm", "reward", {}, "f", 10, extra={"reward_mean": 0.5, "reward_std": 2.0})
    assert handoff.reward_stats(rm, "grpo_rloo.reward_model", "/y") == (0.5, 2.0)
