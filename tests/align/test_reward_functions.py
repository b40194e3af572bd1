"""The reward functions of llm/align/reward_functions.py (path and module forms, weights, every error named)."""

import pytest

from llm.align.reward_functions import RewardError, RewardFunctions, load_function

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

def test_reward_functions_path_and_module_forms(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def length(prompts, completions, **fields):\n    return [float(len(c)) for c in completions]\n"
                 "def exact(prompts, completions, answer, **fields):\n"
                 "    return [float(c == a) for c, a in zip(completions, answer)]\n"
                 "NOT_CALLABLE = 3\n"
                 "def bad_len(prompts, completions, **fields):\n    return [1.0]\n"
                 "def boom(prompts, completions, **fields):\n    raise KeyError('answer')\n"
                 "def nan(prompts, completions, **fields):\n    return [float('nan')] * len(completions)\n")
    fields = [{"answer": "12"}, {"answer": "34"}]
    both = RewardFunctions([f"{f}:length", f"{f}:exact"], [0.5, 2.0])
    assert both(["21", "43"], ["12", "3"], fields) == [0.5 * 2 + 2.0, 0.5 * 1]
    sort = RewardFunctions(["llm.align.task:sort_reward"])
    assert sort(["5183", [{"role": "user", "content": "21"}]], ["1358", "21"], [{}, {}]) == [1.0, 0.0]
    for spec, match in [("nocolon", "give 'path/to/file.py:function'"), (f"{tmp_path}/absent.py:fn", "no file"),
                        ("no_such_module_x:fn", "cannot import module 'no_such_module_x'"),
                        (f"{f}:missing", "has no attribute 'missing'"), (f"{f}:NOT_CALLABLE", "is not callable")]:
        with pytest.raises(RewardError, match=match):
            load_function(spec)
    (tmp_path / "broken.py").write_text("import no_such_module_y\n")
    with pytest.raises(RewardError, match="importing .*broken.py failed: ModuleNotFoundError"):
        load_function(f"{tmp_path}/broken.py:fn")
    for name, match in [("bad_len", "must return a list of 2 floats, got list of 1"),
                        ("boom", "raised KeyError"), ("nan", "returned nan for completion 0")]:
        with pytest.raises(RewardError, match=match):
            RewardFunctions([f"{f}:{name}"])(["a", "b"], ["x", "y"], fields)
    with pytest.raises(RewardError, match="1 reward weights for 2 rewards"):
        RewardFunctions([f"{f}:length", f"{f}:exact"], [1.0])
