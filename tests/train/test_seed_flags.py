"""FlagEmbedding's fine-tuning command runs unchanged on ``python -m helpers.train.kd_finetune``
(helpers/train/seed_flags.py): its flags mapped onto KDArgs, or accepted and named in one warning."""
import json
import logging
from dataclasses import fields

import pytest

from helpers.train.kd_finetune import KDArgs, build_parser
from helpers.train.seed_flags import EMBEDDER_FLAGS, apply_seed_flags

KD_FIELDS = {f.name for f in fields(KDArgs)}
# FlagEmbedding's flags that have no effect here, each named in the one warning
NO_OPS = ["deepspeed", "dataloader_drop_last", "same_dataset_within_batch", "pad_to_multiple_of", "cache_dir",
          "cache_path", "save_steps", "save_lora_every_epoch", "use_flash_attn",
          "report_to", "additional_special_tokens", "small_threshold", "drop_threshold",
          "max_example_num_per_dataset", "save_total_limit"]


def parse(*argv) -> KDArgs:
    return KDArgs(**vars(build_parser().parse_args(list(argv))))


def refused(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(list(argv))
    assert e.value.code == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------- the mappings
def test_the_parsed_namespace_holds_kdargs_fields_only():
    ns = build_parser().parse_args(["--deepspeed", "ds.json", "--sentence_pooling_method", "mean", "--bf16"])
    assert set(vars(ns)) == KD_FIELDS


def test_sentence_pooling_method_sets_pooling_method(capsys):
    assert parse("--sentence_pooling_method", "last_token").pooling_method == "last_token"
    assert parse("--sentence_pooling_method", "mean", "--embedder_model_class", "encoder-only-base").pooling_method == "mean"
    assert parse().pooling_method is None
    assert parse("--sentence_pooling_method", "last_token", "--pooling_method", "last_token").pooling_method == "last_token"
    err = refused(capsys, "--sentence_pooling_method", "last_token", "--pooling_method", "mean")
    assert "--sentence_pooling_method" in err and "--pooling_method" in err
    assert "invalid choice" in refused(capsys, "--sentence_pooling_method", "max")


def test_retrieval_use_examples_false_means_no_examples(capsys):
    assert parse("--retrieval_use_examples", "False").max_examples == 0
    assert parse("--retrieval_use_examples", "True").max_examples == 5          # KDArgs' default, kept
    assert parse("--retrieval_use_examples").max_examples == 5
    assert parse("--retrieval_use_examples", "True", "--max_examples", "3").max_examples == 3
    assert parse("--retrieval_use_examples", "False", "--max_examples", "0").max_examples == 0
    err = refused(capsys, "--retrieval_use_examples", "False", "--max_examples", "3")
    assert "--retrieval_use_examples False sets max_examples=0 but --max_examples 3 is given too" in err


@pytest.mark.parametrize("argv, want", [
    (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
     "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"),
    (["q_proj,k_proj"], "q_proj,k_proj"),
    (["q_proj, k_proj", "v_proj"], "q_proj,k_proj,v_proj"),
    (["None"], None),
])
def test_target_modules_space_or_comma_separated(argv, want):
    assert parse("--target_modules", *argv).target_modules == want
    assert parse().target_modules is None


def test_bf16_and_fp16_are_our_one_mixed_precision_switch():
    assert parse("--bf16").use_fp16 is True
    assert parse("--fp16").use_fp16 is True and parse("--fp16", "False").use_fp16 is False
    assert parse("--bf16", "False").use_fp16 is True                # our default stays (fp32 on CPU anyway)
    assert parse("--bf16", "False", "--fp16", "False").use_fp16 is False
    assert parse("--bf16", "--fp16").use_fp16 is True


def test_bf16_true_with_fp16_false_is_refused(capsys):
    err = refused(capsys, "--bf16", "True", "--fp16", "False")
    assert "--bf16" in err and "--fp16" in err


def test_use_lora_false_means_full_finetuning():
    assert parse("--use_lora", "False").use_lora is False
    assert parse("--use_lora", "True").use_lora is True and parse("--use_lora").use_lora is True
    assert parse().use_lora is True


def test_normalize_embeddings_false_is_refused():
    """A field of the embedder block (True everywhere); training cannot honour False."""
    with pytest.raises(ValueError, match="normalize_embeddings False is not supported"):
        parse("--normalize_embeddings", "False")
    assert parse("--normalize_embeddings", "True").normalize_embeddings is True


def test_train_data_one_path_or_a_clear_error(capsys):
    assert parse("--train_data", "a b.jsonl").train_data == "a b.jsonl"
    err = refused(capsys, "--train_data", "a.jsonl", "b.jsonl")
    assert "2 paths" in err and "concatenate" in err


def test_other_mapped_flags():
    a = parse("--eval_corpus_path", "c.jsonl", "--eval_data", "t.jsonl", "--per_device_eval_batch_size", "7",
              "--use_qlora", "True")
    assert a.corpus_file == "c.jsonl" and a.embedder_batch_size == 7 and a.load_in_4bit is True


def test_own_flags_stand_alone_as_in_the_seed():
    a = parse("--overwrite_output_dir", "--gradient_checkpointing", "--negatives_cross_device", "--fp16")
    assert a.overwrite_output_dir and a.gradient_checkpointing and a.negatives_cross_device and a.use_fp16


def test_apply_seed_flags_is_a_pure_table_lookup():
    res = apply_seed_flags({"pooling_method": None, "max_examples": 5, "seed_flag__sentence_pooling_method": "cls",
                            "seed_flag__retrieval_use_examples": False, "seed_flag__deepspeed": "ds.json"}, set())
    assert res.values == {"pooling_method": "cls", "max_examples": 0}
    assert [f for f, _, _ in res.noops] == ["deepspeed"] and len(res.mapped) == 2


def test_the_table_is_consistent():
    flags = [s.flag for s in EMBEDDER_FLAGS]
    assert len(flags) == len(set(flags))
    for s in EMBEDDER_FLAGS:
        assert s.field is None or s.field in KD_FIELDS, s
        assert s.flag not in KD_FIELDS or s.flag == s.field, s      # no silent shadowing of our flags
        assert s.field is not None or s.reason, s                   # a no-op says why
    assert {"deepspeed", "sentence_pooling_method", "retrieval_use_examples", "bf16", "use_lora"} <= set(flags)


# ----------------------------------------------------------------------------- the one warning
def test_one_warning_names_every_no_op_flag(caplog):
    caplog.set_level(logging.INFO)
    argv = ["--deepspeed", "ds.json", "--dataloader_drop_last", "True", "--same_dataset_within_batch", "True",
            "--pad_to_multiple_of", "8", "--cache_dir", "/c", "--cache_path", "/d", "--save_steps", "1000",
            "--save_lora_every_epoch", "True", "--normalize_embeddings", "True", "--use_flash_attn", "True",
            "--report_to", "none", "--use_lora", "True", "--additional_special_tokens", "<instruct>", "<query>",
            "--small_threshold", "0", "--drop_threshold", "0", "--max_example_num_per_dataset", "100",
            "--save_total_limit", "2", "--sentence_pooling_method", "last_token"]
    parse(*argv)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name == "helpers.train.seed_flags"
    msg = warnings[0].getMessage()
    for f in NO_OPS:
        assert f"--{f}: " in msg, f
    assert "sentence_pooling_method" not in msg                    # mapped, not a no-op
    assert any("--sentence_pooling_method last_token -> pooling_method='last_token'" in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)


def test_no_warning_without_seed_flags(caplog):
    caplog.set_level(logging.INFO)
    parse("--learning_rate", "1e-4", "--fp16")
    assert not [r for r in caplog.records if r.name == "helpers.train.seed_flags"]


def test_help_lists_our_flags_and_the_seed_flags_apart(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    ours, seed = out.split("FlagEmbedding flags:", 1)
    assert "--learning_rate" in ours and "AdamW learning rate" in ours and "--pooling_method" in ours
    assert "--deepspeed" not in ours
    for f in ("deepspeed", "sentence_pooling_method", "retrieval_use_examples", "bf16"):
        assert f"--{f}" in seed, f
    assert "--use_lora" in ours              # our own field now (full fine-tuning with False)
    assert "-> pooling_method" in seed and "no effect here: DeepSpeed" in seed.replace("\n", " ").replace("  ", " ")


# ----------------------------------------------------------------------------- the seed's command
def seed_command(train, out, cache):
    """FlagEmbedding's examples/finetune/embedder/decoder_only/icl.sh plus the Eedi team's flags,
    verbatim apart from paths, the model and tiny sizes (and our --eval_data/--corpus_file None:
    the seed trains without evaluation, our defaults point at the demo run)."""
    return [
        "--model_name_or_path", "demo:smollm2-135m-instruct", "--cache_dir", str(cache / "hub"),
        "--use_lora", "True", "--lora_rank", "4", "--lora_alpha", "8",
        "--target_modules", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj",
        "--additional_special_tokens", "<instruct>", "<query>", "<response>",
        "--save_merged_lora_model", "False",
        "--train_data", str(train), "--cache_path", str(cache / "data"),
        "--train_group_size", "2", "--query_max_len", "48", "--passage_max_len", "16", "--pad_to_multiple_of", "8",
        "--query_instruction_for_retrieval", "Given a query, retrieve passages that are relevant to the query.",
        "--query_instruction_format", "<instruct>{}\\n<query>{}",
        "--knowledge_distillation", "True", "--same_dataset_within_batch", "True",
        "--small_threshold", "0", "--drop_threshold", "0",
        "--example_query_max_len", "16", "--example_passage_max_len", "16", "--retrieval_use_examples", "True",
        "--icl_suffix_str", "\\n<response>", "--max_example_num_per_dataset", "100000000",
        "--output_dir", str(out), "--overwrite_output_dir", "--learning_rate", "1e-4", "--fp16",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--dataloader_drop_last", "True",
        "--warmup_ratio", "0.1", "--gradient_checkpointing", "--deepspeed", "../../ds_stage1.json",
        "--logging_steps", "1", "--save_steps", "1000", "--negatives_cross_device", "--temperature", "0.02",
        "--sentence_pooling_method", "last_token", "--normalize_embeddings", "True", "--kd_loss_type", "kl_div",
        "--save_lora_every_epoch", "True", "--save_total_limit", "2", "--report_to", "none",
        "--use_flash_attn", "False", "--eval_data", "None", "--corpus_file", "None", "--devices", "cpu",
    ]


def test_the_seed_command_parses_to_the_expected_kdargs(tmp_path):
    a = parse(*seed_command(tmp_path / "t.jsonl", tmp_path / "o", tmp_path))
    assert a.target_modules == "q_proj,k_proj,v_proj,o_proj,gate_proj,down_proj,up_proj"
    assert a.pooling_method == "last_token" and a.max_examples == 5 and a.use_fp16 is True
    assert a.overwrite_output_dir and a.gradient_checkpointing and a.negatives_cross_device
    assert a.eval_data is None and a.corpus_file is None and a.save_merged_lora_model is False
    assert a.query_instruction_format == "<instruct>{}\\n<query>{}" and a.kd_loss_type == "kl_div"




@pytest.mark.integration
def test_the_seed_command_trains_one_step_on_cpu(tiny, tmp_path):  # noqa: F811
    """``python -m helpers.train.kd_finetune <the seed's flags>`` as a user runs it: one step of the
    demo SmolLM2 on CPU, network blocked; exits 0, writes the adapter and metrics.jsonl, warns once."""
    from tests.fixtures.sandbox import net_attempts, python_m, run_stage, stage_env
    rows = [json.loads(l) for l in (tiny / "train.jsonl").read_text().splitlines()][:2]
    train = tmp_path / "train scored.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    env = stage_env(tmp_path)
    r = run_stage(python_m("helpers.train.kd_finetune", *seed_command(train, out, tmp_path)), env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (out / "lora_epoch_1" / "adapter_model.safetensors").exists()
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1] and metrics[0]["global_step"] == 1
    assert not (out / "merged_model_lora_epoch_1").exists()
    warned = [l for l in r.stderr.splitlines() if "with no effect here" in l]
    assert len(warned) == 1, r.stderr[-4000:]
    for f in NO_OPS:
        assert f"--{f}: " in warned[0], f
    assert "pooling_method='last_token'" in r.stderr
    assert net_attempts(env) == []
