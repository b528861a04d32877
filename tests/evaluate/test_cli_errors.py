"""Bad input to ``ftcot evaluate``: one line on stderr naming the thing and the fix, exit code 2."""

from __future__ import annotations

import pytest

from tests.cli import assert_one_line_error
from tests.evaluate.cli import run_evaluate


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft-cot"],
         ["Unknown method 'ft-cot'", "Did you mean 'ft_cot'?"]),
        (["--model", "/no/such/model", "--task", "coin_flip", "--method", "ft"],
         ["/no/such/model", "no such directory"]),
        (["--model", "tiny-gtp2", "--task", "coin_flip", "--method", "ft"],
         ["Unknown model 'tiny-gtp2'", "Did you mean 'tiny-gpt2'?"]),
        (["--model", "tiny-gpt2", "--task", "coin_flip"],
         ["tiny-gpt2 carries no template", "pass --method"]),
        (["--model", "/no/such/ckpt", "--task", "coin_flip"],  # no method: a path, not a model without a template
         ["--model /no/such/ckpt: no such directory"]),
        (["--model", "tiny-gpt2", "--task", "tracking_shuffled_objects", "--method", "fs_cot"],
         ["No Few-shot-CoT exemplars for task 'tracking_shuffled_objects'", "use --method zs_cot or zs"]),
        (["--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", "--limit", "0"],
         ["--limit: must be at least 1"]),
        (["--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", "--split", "dev"],
         ["Unknown split 'dev'"]),
        (["--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", "--base-url", "http://127.0.0.1:1/v1"],
         ["--base-url and --api-key-env apply to openai: models"]),
    ],
    ids=["unknown-method", "missing-model-dir", "model-typo", "no-method", "missing-ckpt-no-method",
         "fs-cot-without-exemplars",
         "bad-limit", "bad-split", "base-url-for-local-model"],
)
def test_bad_input_is_one_line_with_exit_code_2(args, fragments, data_root, tmp_path):
    result = run_evaluate(*args, "--out", tmp_path / "eval", "--data-dir", data_root)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "eval").exists()  # not even an empty EVAL_DIR is left behind
