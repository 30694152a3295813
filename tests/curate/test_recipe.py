"""The compare fine-tune recipe: LoRA or full fine-tuning, epochs, the device, and the export for outside evals."""

from __future__ import annotations

import random

import pytest
import torch

from curate.config import build, load_config
from curate.corpus import Rows
from curate.errors import ConfigError
from curate.recipe import Recipe, finetune_arm, merged, resolved_steps, save_for_eval
from curate.settings import ReweightSettings

RW = ReweightSettings(method="uniform", device="cpu", max_len=32, template="plain")


def _rows(n: int, seed: int) -> Rows:
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(n)]
    return Rows([f"e{i}" for i in range(n)], ["a" if i % 2 else "b" for i in range(n)],
                [f"{a}+{b}=" for a, b in pairs], [str(a + b) for a, b in pairs])


@pytest.fixture(scope="module")
def base(tmp_path_factory, seeded):
    """A saved tiny Llama base folder and 48 training rows."""
    from curate.modeling import save_pretrained
    from solvers.lm import tiny_llama, train_tokenizer

    rows = _rows(48, seed=1)
    with seeded(0):
        tok = train_tokenizer([p + "\n### Response:\n" + r for p, r in zip(rows.prompts, rows.responses,
                                                                         strict=True)], vocab_size=120)
        model = tiny_llama(len(tok), hidden=32, layers=2, heads=4, max_len=64, seed=0)
    folder = save_pretrained(tmp_path_factory.mktemp("recipe") / "base", model, tok)
    return folder, rows


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def lora_run(base, seeded):
    """One LoRA fine-tune of the base (read-only for the tests that share it) and its step records."""
    folder, rows = base
    records: list[dict] = []
    with seeded(0):
        model, tok, tokens = finetune_arm(RW, Recipe(lora=True, steps=30, lr=3e-2, batch_size=8),
                                          folder, rows, seed=0, on_step=records.append)
    return model, tok, tokens, records


def test_lora_trains_only_the_adapters_and_lowers_the_loss(base, lora_run):
    folder, _ = base
    model, _, tokens, records = lora_run
    reference = _load(folder).state_dict()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    base_weights = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
                    for n, p in model.named_parameters() if "lora_" not in n}
    assert base_weights.keys() <= reference.keys()
    assert all(torch.equal(p, reference[n]) for n, p in base_weights.items())
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # B starts at zero
    assert len(records) == 30 and records[0]["stage"] == "sft" and tokens > 0
    losses = [r["loss"] for r in records]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1  # 5.40 -> 5.15: a random tiny base learns slowly


def test_full_fine_tune_changes_the_base_weights(base):
    folder, rows = base
    model, _, _ = finetune_arm(RW, Recipe(steps=2, batch_size=8), folder, rows, seed=0)
    reference = _load(folder).state_dict()
    assert all(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(p, reference[n]) for n, p in model.named_parameters())


def test_epochs_set_the_number_of_steps(base):
    assert resolved_steps(Recipe(steps=7), 1000) == 7
    assert resolved_steps(Recipe(epochs=2, batch_size=16), 60) == 8  # ceil(7.5)
    assert resolved_steps(Recipe(epochs=0.1, batch_size=3), 30) == 1  # not 2 from float rounding
    assert resolved_steps(Recipe(epochs=0.01, batch_size=16), 10) == 1
    folder, rows = base
    records: list[dict] = []
    finetune_arm(RW, Recipe(epochs=0.5, steps=99, batch_size=8), folder, rows, seed=0, on_step=records.append)
    assert len(records) == resolved_steps(Recipe(epochs=0.5, batch_size=8), len(rows)) == 3


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("batch_size", 0), ("lr", 0.0), ("lr", float("nan")), ("epochs", 0.0), ("epochs", -1.0),
    ("lora_rank", 0), ("lora_alpha", 0.0), ("lora_dropout", 1.0), ("lora_targets", " , "), ("weight_decay", -0.1),
    ("warmup_ratio", 1.0), ("eval_rule", "nope"), ("eval_limit", 0), ("max_new_tokens", 0)])
def test_a_bad_recipe_value_names_its_field(field, value):
    with pytest.raises(ValueError, match=rf"^recipe\.{field}: ") as e:
        Recipe(**{field: value})
    assert "\n" not in str(e.value)


def test_recipe_keys_parse_from_the_command_line():
    args = ["lora=true", "lora_rank=16", "epochs=2", "lora_alpha=32", "lora_targets=q_proj,v_proj", "lr=1e-4"]
    recipe = build(Recipe, load_config(None, args), where="recipe")
    assert (recipe.lora, recipe.lora_rank, recipe.epochs, recipe.lora_alpha, recipe.lora_targets, recipe.lr) == (
        True, 16, 2.0, 32.0, "q_proj,v_proj", 1e-4)
    assert build(Recipe, load_config(None, ["epochs=null"]), where="recipe").epochs is None
    with pytest.raises(ConfigError, match=r"recipe\.lora_rank"):
        build(Recipe, load_config(None, ["lora_rank=0"]), where="recipe")


def test_unknown_lora_targets_are_a_config_error(base):
    folder, rows = base
    with pytest.raises(ConfigError, match=r"^recipe\.lora_targets: 'no_such_proj'"):
        finetune_arm(RW, Recipe(lora=True, lora_targets="no_such_proj", steps=1), folder, rows, seed=0)


def test_the_trained_model_stays_on_the_device_and_evaluates_as_is(lora_run):
    from evals.harness import generate_greedy, heldout_loss
    from solvers.data import tokenize_rows

    model, tok, _, _ = lora_run
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    rows = _rows(6, seed=9)
    data = tokenize_rows(tok, rows.prompts, rows.responses, [0] * 6, ["a"], 32, template="plain")
    assert heldout_loss(model, data, batch_size=4)["n_examples"] == 6
    assert len(generate_greedy(model, tok, rows.prompts, template="plain", max_new_tokens=3)) == 6


def test_save_for_eval_merges_lora_into_a_plain_folder(lora_run, tmp_path):
    from peft import PeftModel

    model, tok, _, _ = lora_run
    dest = save_for_eval(model, tok, tmp_path / "eval_model")
    names = {p.name for p in dest.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names and "adapter_config.json" not in names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temp sibling is gone
    assert isinstance(model, PeftModel)  # merged on a copy: the caller's model still carries its adapters
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        expected = merged(model).eval()(input_ids=ids).logits
        reloaded = _load(dest).eval()(input_ids=ids).logits
        adapted = model.eval()(input_ids=ids).logits
    torch.testing.assert_close(reloaded, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=0)


def test_bf16_autocast_is_refused_off_cuda(base):
    from transformers import AutoTokenizer

    from solvers.data import tokenize_rows
    from solvers.sft import finetune

    folder, rows = base
    tok = AutoTokenizer.from_pretrained(folder)
    data = tokenize_rows(tok, rows.prompts, rows.responses, [0] * len(rows), ["a"], 32, template="plain")
    with pytest.raises(ValueError, match="autocast_bf16 needs a CUDA model"):
        finetune(_load(folder), data, steps=1, lr=1e-3, batch_size=4, seed=0, autocast_bf16=True)


@pytest.mark.gpu
def test_cuda_fine_tune_trains_fp32_weights_under_bf16_autocast(base):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    folder, rows = base
    rw = ReweightSettings(method="uniform", device="cuda", max_len=32, template="plain")
    records: list[dict] = []
    model, _, _ = finetune_arm(rw, Recipe(lora=True, steps=20, lr=1e-2, batch_size=8), folder, rows, seed=0,
                               on_step=records.append)
    assert all(t.device.type == "cuda" for t in [*model.parameters(), *model.buffers()])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert records[-1]["loss"] < records[0]["loss"]
