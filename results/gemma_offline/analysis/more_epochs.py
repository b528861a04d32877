"""Validation experiment (FINDINGS.md, "Epochs"): continue finished 3-epoch training stages of the gemma_offline run
to more epochs (constant lr, no scheduler: epochs 4..N of a resumed run are those of an uninterrupted N-epoch run)
and print validation accuracy per epoch. Each stage is copied first; the run's own stages are not touched.

Usage: python more_epochs.py EPOCHS "STAGE LABEL" ...   e.g. 6 "gemma-270m seed 0 on multiarith ft_cot, from replay:text-davinci-002"
(reads ~/.cache/ftcot-runs/gemma_offline, writes ~/.cache/ftcot-runs/epochs)."""
import json, shutil, sys
from pathlib import Path
from ftcot.train.config import TrainConfig
from ftcot.train.trainer import train

RUN = Path.home() / ".cache/ftcot-runs/gemma_offline/stages/train"
OUT = Path.home() / ".cache/ftcot-runs/epochs"
EPOCHS = int(sys.argv[1])
for want in sys.argv[2:]:
    stage = next(d for d in RUN.iterdir() if json.loads((d / "stage.json").read_text())["label"] == want)
    record = json.loads((stage / "train.json").read_text())
    out = OUT / stage.name
    if not out.exists():
        out.mkdir()
        shutil.copytree(stage / "checkpoints", out / "checkpoints")
        for name in ("train.json", "metrics.jsonl"):
            if (stage / name).exists():
                shutil.copy(stage / name, out / name)
    config = TrainConfig(**{**record["config"], "epochs": EPOCHS})
    result = train(record["data_dir"], out, config, task=record["task"])
    print(want, [(e["epoch"], round(100 * e["val_accuracy"], 1)) for e in result["epochs"]], flush=True)
