"""Experiment (FINDINGS.md, date understanding): drop the kept rationales that end on a date other than the
gold choice's (the teacher's stage 2 picked the right letter anyway), from the training rows only.

Usage: python drop_inconsistent_dates.py CURATED_DATA_DIR OUT_DATA_DIR, then
`ftcot train OUT_DATA_DIR --out CKPT --student gemma-270m --lora --epochs 3 --lr 3e-4 --max-length 512 --seed 0`
and compare the validation accuracy per epoch in CKPT/train.json with the same training on CURATED_DATA_DIR.
The validation rows are kept as they are (validation is scored against gold whatever the rationale says).
"""
import collections
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from date_rationale_consistency import classify  # noqa: E402

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name not in ("done.json", "stage.json", "train.jsonl"):
        shutil.copy(f, dst / f.name)
rows = [json.loads(line) for line in (src / "train.jsonl").open()]
kept = [r for r in rows if classify(r)[1] in ("gold date", "no date")]
(dst / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
print(f"kept {len(kept)} of {len(rows)} training rows:",
      dict(collections.Counter(classify(r)[1] for r in rows)))
