"""Evaluation reports progress off a terminal too: lines with done/total and an ETA on stderr and in the progress
log launch/evaluate.py puts beside --out (llm/train/progress.py), where a tqdm bar alone would leave a batch job's
log empty."""
from llm.eval.checkpoint import load_eval_model
from llm.eval.lm import ForgeLM
from llm.eval.run import progress_log_path


def test_scoring_writes_progress_lines_to_stderr_and_the_log(eval_checkpoint, tmp_path, capsys):
    log = progress_log_path(tmp_path / "results.json")
    assert log == tmp_path / "results.progress.log"
    lm = ForgeLM(load_eval_model(eval_checkpoint), batch_size=2, progress_log=log)
    lm.score([([1, 2, 3], [4, 5])] * 5, "loglikelihood")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("loglikelihood: request 2/5 (40%) |"), err
    assert err[-1].startswith("loglikelihood: request 5/5 (100%) |") and "ETA 0:00:00" in err[-1], err
    assert [line.split(" ", 2)[2] for line in log.read_text().splitlines()] == err
    lm.score([([1, 2, 3], [4, 5])], "quiet", disable_tqdm=True)  # lm_eval's other ranks: nothing
    assert capsys.readouterr().err == "" and len(log.read_text().splitlines()) == len(err)
