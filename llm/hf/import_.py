"""Import a Llama-family (Llama, Mistral, Mixtral) Hugging Face model directory as one of our checkpoints.

`OUT_DIR/step_00000000/` gets what a training run writes (llm/train/checkpoint.py): model.pt (llm/model.py names,
the stored dtype), config.yaml (a run config whose model section comes from config.json, whose data.tokenizer is
the imported tokenizer and whose checkpoint.init_from is this step directory: add data.paths and train), the
tokenizer files, and trainer_state.json last. Its layout is {"backend": "hf_import"}, so a run resumes from it
only through checkpoint.init_from, never as its own checkpoint.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from llm.config import CheckpointConfig, ConfigError, DataConfig, RunConfig
from typed_yaml.files import read_json
from llm.hf.load import read_hf_config, read_hf_weights
from llm.train import checkpoint as ckpt

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model")


def import_hf(hf_dir: str | Path, out_dir: str | Path, force: bool = False, staging: str | Path | None = None) -> Path:
    """Write HF directory hf_dir as checkpoint out_dir/step_00000000 and return that path.

    Raises ConfigError for an unsupported architecture (naming the config field or the tensor), weights that do
    not fit config.json (llm/hf/validate.py; checked before anything is written), a corrupt file (naming it), a
    missing tokenizer.json, or an existing non-empty out_dir (unless force, which replaces it). With `staging` (an empty
    directory; launch/import_hf.py's typed_yaml/output_dir.py `staged_output`), the files are written there, naming
    out_dir in their paths, and out_dir is neither checked nor touched: the caller moves staging to out_dir.
    """
    from data_pipeline.hf_tokenizer import HFTokenizer

    src = Path(hf_dir)
    model = read_hf_config(src)
    if not (src / "tokenizer.json").is_file():
        raise ConfigError(f"{hf_dir}: no tokenizer.json (the tokenizer is imported with the weights)")
    read_json(src / "tokenizer.json", dict, "tokenizer.json")  # names the file when it is corrupt
    vocab = HFTokenizer(src).vocab_size
    if vocab > model.vocab_size:
        raise ConfigError(f"{hf_dir}: tokenizer.json has {vocab} tokens but config.json vocab_size={model.vocab_size}")
    weights = read_hf_weights(src)  # every tensor checked against config.json before anything is written
    out = Path(out_dir)
    if staging is None and out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out_dir} exists and is not empty (pass --force to replace it)")
        shutil.rmtree(out)
    final = ckpt.step_dir(out, 0)
    written = final if staging is None else ckpt.step_dir(staging, 0)
    tmp = ckpt.temp_dir_for(written)
    tmp.mkdir(parents=True)
    torch.save(weights, tmp / "model.pt")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, tmp / name)
    run = RunConfig(model=model, data=DataConfig(tokenizer=str(final / "tokenizer.json")),
                    checkpoint=CheckpointConfig(init_from=str(final)), out_dir=str(out / "run"))
    (tmp / "config.yaml").write_text(run.to_yaml())
    ckpt.write_state(tmp / ckpt.STATE_FILE, {"step": 0, "tokens": 0, "consumed_samples": 0,
                                             "layout": {"backend": "hf_import", "source": str(src.resolve())}})
    ckpt.publish(tmp, written)
    return final
