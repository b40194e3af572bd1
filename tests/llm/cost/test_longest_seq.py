"""The longest sequence per layout (llm/cost/longest_seq.py): what it finds fits and one step more does not, it grows
with memory, it is a multiple of what the layout needs, and a context degree that breaks a rule is refused."""
import dataclasses

import pytest

from llm.config import ConfigError, ModelConfig
from llm.config.model import MoEConfig
from llm.cost.layout import Layout
from llm.cost.longest_seq import MAX_SEQ, longest_seq, longest_seq_table, predict, seq_step

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CFG = ModelConfig(n_layers=8, d_model=1024, n_heads=16, n_kv_heads=4, d_ff=2816, vocab_size=32000, seq_len=2048)
GB = 1e9


@pytest.mark.parametrize("layout", [Layout(1, 1, 8, 0, 1), Layout(1, 1, 2, 3, 1, context=4),
                                    Layout(2, 1, 1, 1, 1, 1, True, context=4), Layout(1, 2, 4, 1, 1, 1)])
def test_the_longest_fits_and_one_step_more_does_not(layout):
    row = longest_seq(CFG, layout, 40 * GB)
    step = seq_step(layout)
    assert row.seq_len > 0 and row.seq_len % step == 0 and row.seq_len % layout.context == 0
    assert row.memory == predict(CFG, layout, row.seq_len) and row.memory.total <= 40 * GB
    assert predict(CFG, layout, row.seq_len + step).total > 40 * GB
    assert seq_step(Layout(2, 1, 1, 1, 1, 0, True, context=4)) == 128
    assert seq_step(Layout(1, 1, 1, 0, 1, context=3)) == 384


def test_monotone_in_memory_and_in_context():
    lay = Layout(1, 1, 1, 3, 1, 1, context=8)
    lengths = [longest_seq(CFG, lay, gb * GB).seq_len for gb in (8, 16, 40, 80, 141)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    # More context ranks (same world) reach further; recomputation reaches further than none.
    by_c = [longest_seq(CFG, Layout(1, 1, 8 // c, 3, 1, 1, context=c), 80 * GB).seq_len for c in (1, 2, 4)]
    assert by_c[0] < by_c[1] < by_c[2]
    assert longest_seq(CFG, Layout(1, 1, 2, 3, 1, 0, context=4), 80 * GB).seq_len < by_c[2]


def test_nothing_fits_and_the_cap():
    assert longest_seq(CFG, Layout(1, 1, 1, 0, 1), 1 * GB).seq_len == 0
    tiny = ModelConfig(n_layers=1, d_model=64, n_heads=4, d_ff=192, vocab_size=256, seq_len=128)
    capped = longest_seq(tiny, Layout(1, 1, 1, 0, 1, 1), 1e15, framework_bytes=0, fragmentation=0.0)
    assert capped.capped and capped.seq_len == MAX_SEQ


def test_document_mask_is_quadratic_and_shortens():
    lay = Layout(1, 1, 2, 3, 1, 1, context=4)
    plain, masked = longest_seq(CFG, lay, 80 * GB), longest_seq(CFG, lay, 80 * GB, document_mask=True)
    assert masked.seq_len < plain.seq_len and masked.memory.document_mask == masked.seq_len ** 2


def test_table_only_layouts_the_rules_allow():
    rows = longest_seq_table(CFG, 8, 80 * GB)
    assert rows == sorted(rows, key=lambda r: -r.seq_len)
    for r in rows:
        lay = r.layout
        assert lay.world_size == 8 and (lay.context == 1 or lay.pp == 1)
        assert (CFG.n_kv_heads // lay.tp) % lay.context == 0  # 4 key/value heads: tp·C <= 4
        assert lay.recompute_every_k in (0, 1) and lay.sequence_parallel == (lay.tp > 1)
    assert {r.layout.context for r in rows} == {1, 2, 4}
    assert {r.layout.context for r in longest_seq_table(CFG, 8, 80 * GB, contexts=(2,))} == {2}
    moe = dataclasses.replace(CFG, moe=MoEConfig(experts=8, top_k=2, expert_d_ff=704))
    assert {r.layout.context for r in longest_seq_table(moe, 8, 80 * GB)} == {1}


@pytest.mark.parametrize("contexts,message", [
    ((3,), "--context 3 does not divide the 8 GPUs"),
    ((8,), "--context 8: parallel.context=8 does not divide the 4 heads per tensor-parallel rank (model.n_kv_heads=4"),
])
def test_a_context_degree_no_layout_takes_is_refused_in_one_line(contexts, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as err:
        longest_seq_table(CFG, 8, 80 * GB, contexts=contexts)
    assert "\n" not in str(err.value)
