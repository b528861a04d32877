"""Pilot (FINDINGS.md, date understanding): append a sentence naming the gold choice to every ft_cot row.

Usage: python name_the_choice.py CURATED_DATA_DIR OUT_DATA_DIR, then
`ftcot train OUT_DATA_DIR --out CKPT --student gemma-270m --lora --epochs 3 --lr 3e-4 --max-length 512 --seed 0`
and read the validation accuracy per epoch in CKPT/train.json. The rationale field is rewritten with the
completion, since `ftcot train` refuses rows that no longer match their template.
"""
import json, re, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
CH = re.compile(r"\(([A-F])\) (.+?)(?=\s*\([A-F]\) |\s*###|\s*$)")
for f in src.iterdir():
    if f.name in ("train.jsonl", "val.jsonl"):
        out = []
        for line in f.read_text().splitlines():
            r = json.loads(line)
            tail = r["prompt"][r["prompt"].rfind("Answer Choices"):]
            choices = dict(CH.findall(tail))
            text = choices[r["answer"]].rstrip(".")
            head, sep, ans = r["completion"].rpartition(" -->")
            extra = f" So the answer is {text}, which is ({r['answer']}).";
            r["completion"] = f"{head}{extra}{sep}{ans}"; r["rationale"] = r["rationale"] + extra
            out.append(json.dumps(r))
        (dst / f.name).write_text("\n".join(out) + "\n")
    elif f.is_file() and f.name not in ("done.json", "stage.json"):
        shutil.copy(f, dst / f.name)
print(json.loads((dst / "train.jsonl").read_text().splitlines()[1])["completion"])
