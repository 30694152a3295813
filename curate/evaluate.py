"""Evaluate one compare arm's fine-tuned model on the target's test rows, with every metric's per-row values.

The built-in metrics are the held-out target loss (teacher-forced, every test row) and greedy exact-match
accuracy (the first ``recipe.eval_limit`` rows). Two plug-ins join them when asked: an LLM judge over the same
generations (``--judge URL``, ``evals.judge``) and EleutherAI's lm-evaluation-harness over the saved model
(``--eval lm-eval:TASK``, ``evals.lmeval``). A plug-in that fails is recorded in ``failed`` and its metric left
out; the cell's other metrics stand, so a flaky judge never costs a finished fine-tune.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.corpus import Rows
from curate.modeling import tokenize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluations:
    """What each arm is scored with besides loss and accuracy."""

    lm_eval: tuple[str, ...] = ()
    """lm-eval task names (``--eval lm-eval:TASK[,TASK]``)."""
    lm_eval_include: str | None = None
    """A folder of local lm-eval task YAMLs (``--eval-include``)."""
    lm_eval_limit: int | None = None
    """Examples per lm-eval task (None: all)."""
    judge: Any = None
    """``evals.judge.JudgeSettings`` or None."""


@dataclass
class ArmScores:
    """One arm's evaluation: the metrics, their per-row values where they exist, directions and failures."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_example: dict[str, list[float]] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def evaluate_arm(model: Any, tok: Any, test: Rows, *, max_len: int, template: str, truncation: str,
                 eval_rule: str, eval_limit: int, max_new_tokens: int, evaluations: Evaluations,
                 save_model: Callable[[], Path]) -> ArmScores:
    """Score ``model`` on ``test``; ``save_model`` writes it as a Hugging Face folder when lm-eval needs one."""
    from evals.harness import generation_accuracy, heldout_loss

    scores = ArmScores(directions={"target_loss": "min", "accuracy": "max", "ppl": "min"})
    loss = heldout_loss(model, tokenize(test, tok, sorted(set(test.sources)), max_len, template, truncation),
                        batch_size=32)
    n = min(len(test), eval_limit)
    # the generation prefix is cut as in training (the prompt's start goes first), leaving room for the answer
    prefix = max(max_len // 2, max_len - max_new_tokens)
    acc = generation_accuracy(model, tok, test.prompts[:n], test.responses[:n], eval_rule,  # type: ignore[arg-type]
                              template=template, max_new_tokens=max_new_tokens, max_prompt_len=prefix)
    scores.metrics.update(target_loss=loss["loss"], accuracy=acc["accuracy"], ppl=loss["ppl"])
    scores.per_example.update(target_loss=loss["per_example"], accuracy=acc["per_example"])
    if evaluations.judge is not None:
        _judge(scores, test.prompts[:n], acc["outputs"], test.responses[:n], evaluations.judge)
    if evaluations.lm_eval:
        _lm_eval(scores, save_model, evaluations, str(next(model.parameters()).device))
    return scores


def _judge(scores: ArmScores, prompts: list[str], outputs: list[str], references: list[str], settings: Any) -> None:
    from evals.judge import JudgeError, judge

    try:
        res = judge(prompts, outputs, settings, references=references)
    except JudgeError as e:
        scores.failed["judge"] = str(e)
        return
    if res["score"] is None:
        scores.failed["judge"] = "; ".join(res["errors"]) or "no reply could be scored"
        return
    scores.metrics["judge"] = float(res["score"])
    scores.directions["judge"] = "max"
    if res["n_failed"]:  # rows the judge could not score are missing, so this arm cannot be paired per row
        scores.failed["judge_rows"] = f"{res['n_failed']} of {res['n']} replies unscored: {res['errors'][0]}"
    else:
        scores.per_example["judge"] = [float(x) for x in res["scores"]]


def _lm_eval(scores: ArmScores, save_model: Callable[[], Path], evaluations: Evaluations, device: str) -> None:
    from evals.lmeval import run_lm_eval

    try:
        res = run_lm_eval(save_model(), evaluations.lm_eval, include_path=evaluations.lm_eval_include,
                          limit=evaluations.lm_eval_limit, device=device, log_samples=True)
    except (ValueError, RuntimeError, OSError) as e:
        scores.failed["lm-eval"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return
    for name, value in res["metrics"].items():
        scores.metrics[name] = float(value)
        scores.directions[name] = "max" if res["higher_is_better"].get(name, True) else "min"
        samples = (res.get("samples") or {}).get(name)
        if samples:
            scores.per_example[name] = [float(x) for x in samples]
