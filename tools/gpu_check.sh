#!/usr/bin/env bash
# GPU check: the whole chain on small models through the CUDA paths, in at most ~8 minutes on one GPU.
#   tools/gpu_check.sh [OUT_DIR]
# Exercises: fp16 (cc < 8) / bf16 (cc >= 8) inference (the reranker's half-precision scores against fp32) and autocast training with a GradScaler on fp16,
# a 4-bit base (bitsandbytes) for mining and QLoRA, faiss on the GPU when faiss has GPU support,
# torchrun with one process (the DDP code path), merge + per-epoch evaluation, and prints
# throughput per stage. Models: $EMBEDDER / $RERANKER (default the demo aliases; any HF folder works).
# Also: the T4 path on any GPU (EEDI_FORCE_FP16=1: fp16 + GradScaler even where bf16 exists), the
# retrieve-then-rerank cascade (evaluation sweep and a submission with a reranker block), and the peak
# GPU memory of each Python stage (torch.cuda.max_memory_allocated, printed by EEDI_REPORT_PEAK=1).
# Two workers on the one GPU: mining and scoring with the GPU named twice (EEDI_SHARE_GPU=1) compared with
# one worker, and DDP with two torchrun processes over gloo (EEDI_DDP_BACKEND=gloo: NCCL refuses two ranks
# on one GPU). One overflowing and one NaN optimizer step on purpose (EEDI_FAULT_STEPS) in a forced-fp16
# run: it must finish with the steps counted. The QLoRA adapter evaluated three ways (4-bit base + the
# unmerged adapter, the merged model quantized again, the merged model in half precision) beside its
# per-epoch MAP@25.
# 05_submit through run_all.py (configs/submit.yaml): the QLoRA adapter on its 4-bit base, and a merged model.
# The shipped QLoRA step's s/step and peak GiB with Mistral-7B's layer shapes (bench/layer_probe.py: random 2- and
# 4-layer models through the real stage, scaled to 32 layers, beside the memory plan; PROBE=0 skips it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/gpu_check}
EMBEDDER=${EMBEDDER:-demo:smollm2-135m-instruct}
RERANKER=${RERANKER:-demo:gemma-3-270m}
NQ=${NQ:-64}                    # train queries used (the test split is used whole)
PY=${PYTHON:-python}
rm -rf "$OUT"; mkdir -p "$OUT"
export EEDI_REPORT_PEAK=1       # every Python stage prints its peak GPU memory (grep "peak GPU" $OUT/*.log)
declare -a REPORT
status=0

step() {  # step NAME ITEMS UNIT -- command...
  local name=$1 items=$2 unit=$3; shift 4
  local t0=$(date +%s.%N)
  if "$@" > "$OUT/$name.log" 2>&1; then
    REPORT+=("$(python3 -c "import sys,time; dt=time.time()-float(sys.argv[1]); print(f'{sys.argv[2]:16s} {dt:8.1f} s  {float(sys.argv[3])/dt:8.1f} {sys.argv[4]}/s  ok')" "$t0" "$name" "$items" "$unit")")
  else
    status=1
    REPORT+=("$(printf '%-16s FAILED (see %s)' "$name" "$OUT/$name.log")")
    tail -n 20 "$OUT/$name.log"
  fi
}

$PY - <<'PY'
import torch, sys
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device")
cc = torch.cuda.get_device_capability(0)
print("device", torch.cuda.get_device_name(0), "cc", cc, "-> dtype", "bf16" if cc[0] >= 8 else "fp16")
for mod in ("faiss", "bitsandbytes", "peft", "transformers"):
    try:
        m = __import__(mod); print(mod, getattr(m, "__version__", "?"),
              "gpu-faiss" if mod == "faiss" and hasattr(m, "StandardGpuResources") else "")
    except Exception as e:
        print(mod, "MISSING", e)
PY
[ $? -eq 0 ] || exit 1

$PY -m helpers.data.prepare_data --input_dir data/demo --output_dir "$OUT/data" > "$OUT/prepare.log" 2>&1 || { cat "$OUT/prepare.log"; exit 1; }
head -n "$NQ" "$OUT/data/train_queries.jsonl" > "$OUT/data/train_small.jsonl"
NT=$(wc -l < "$OUT/data/test_queries.jsonl")

MINE=(--embedder_name_or_path "$EMBEDDER" --embedder_model_class decoder-only-icl --candidate_pool "$OUT/data/corpus.jsonl"
      --range_for_sampling 2-100 --negative_number 7 --devices 0 --use_fp16 True --batch_size 32
      --embedder_query_max_length 256 --embedder_passage_max_length 64)
step mine_fp16 "$NQ" queries -- $PY -m helpers.mine.hn_mine "${MINE[@]}" --input_file "$OUT/data/train_small.jsonl" --output_file "$OUT/train_mined.jsonl"
step mine_test "$NT" queries -- $PY -m helpers.mine.hn_mine "${MINE[@]}" --input_file "$OUT/data/test_queries.jsonl" --output_file "$OUT/test_mined.jsonl"
step mine_2workers "$NQ" queries -- env EEDI_SHARE_GPU=1 $PY -m helpers.mine.hn_mine "${MINE[@]}" --devices cuda:0 cuda:0 --input_file "$OUT/data/train_small.jsonl" --output_file "$OUT/train_mined_2workers.jsonl"
step mine_4bit "$NQ" queries -- $PY -m helpers.mine.hn_mine "${MINE[@]}" --load_in_4bit True --input_file "$OUT/data/train_small.jsonl" --output_file "$OUT/train_mined_4bit.jsonl"

SCORE=(--reranker_name_or_path "$RERANKER" --reranker_max_length 256 --reranker_batch_size 16 --use_fp16 True --devices 0)
step score_train $((NQ * 8)) pairs -- $PY -m helpers.rerank.add_reranker_score "${SCORE[@]}" --input_file "$OUT/train_mined.jsonl" --output_file "$OUT/train_scored.jsonl"
step score_test $((NT * 8)) pairs -- $PY -m helpers.rerank.add_reranker_score "${SCORE[@]}" --input_file "$OUT/test_mined.jsonl" --output_file "$OUT/test_scored.jsonl"
step score_2workers $((NT * 8)) pairs -- env EEDI_SHARE_GPU=1 $PY -m helpers.rerank.add_reranker_score "${SCORE[@]}" --devices cuda:0 cuda:0 --input_file "$OUT/test_mined.jsonl" --output_file "$OUT/test_scored_2workers.jsonl"
step score_fp32 $((NT * 8)) pairs -- $PY -m helpers.rerank.add_reranker_score "${SCORE[@]}" --use_fp16 False --input_file "$OUT/test_mined.jsonl" --output_file "$OUT/test_scored_fp32.jsonl"
step score_plain $((NT * 8)) pairs -- $PY -m helpers.rerank.add_reranker_score "${SCORE[@]}" --yes_only False --share_query_prefix False --input_file "$OUT/test_mined.jsonl" --output_file "$OUT/test_scored_plain.jsonl"

TRAIN=(--model_name_or_path "$EMBEDDER" --embedder_model_class decoder-only-icl --train_data "$OUT/train_scored.jsonl"
       --eval_data "$OUT/test_scored.jsonl" --corpus_file "$OUT/data/corpus.jsonl" --num_train_epochs 1
       --per_device_train_batch_size 8 --train_group_size 4 --lora_rank 8 --lora_alpha 16 --query_max_len 256
       --passage_max_len 64 --knowledge_distillation True --gradient_checkpointing True --fp16 True)
step train_torchrun "$NQ" queries -- torchrun --standalone --nproc_per_node 1 -m helpers.train.kd_finetune "${TRAIN[@]}" --devices 0 --output_dir "$OUT/kd_torchrun"
step train_qlora "$NQ" queries -- $PY -m helpers.train.kd_finetune "${TRAIN[@]}" --load_in_4bit True --devices 0 --output_dir "$OUT/kd_qlora"
step train_fp16_forced "$NQ" queries -- env EEDI_FORCE_FP16=1 $PY -m helpers.train.kd_finetune "${TRAIN[@]}" --devices 0 --output_dir "$OUT/kd_fp16_forced"
step train_ddp2_gloo "$NQ" queries -- env EEDI_DDP_BACKEND=gloo torchrun --standalone --nproc_per_node 2 -m helpers.train.kd_finetune "${TRAIN[@]}" --negatives_cross_device True --devices 0 --output_dir "$OUT/kd_ddp2_gloo"
step train_faults "$NQ" queries -- env EEDI_FORCE_FP16=1 EEDI_FAULT_STEPS=2:1e34,3:nan $PY -m helpers.train.kd_finetune "${TRAIN[@]}" --devices 0 --output_dir "$OUT/kd_faults"
EV=(--embedder_model_class decoder-only-icl --queries_file "$OUT/data/test_queries.jsonl" --corpus_file "$OUT/data/corpus.jsonl" --devices 0)
step eval_4bit_adapter "$NT" queries -- $PY -m helpers.eval.evaluate "${EV[@]}" --model_name_or_path "$OUT/kd_qlora/lora_epoch_1" --load_in_4bit True --output_dir "$OUT/eval_4bit_adapter"
step eval_4bit_merged "$NT" queries -- $PY -m helpers.eval.evaluate "${EV[@]}" --model_name_or_path "$OUT/kd_qlora/merged_model_lora_epoch_1" --load_in_4bit True --output_dir "$OUT/eval_4bit_merged"
step eval_half_merged "$NT" queries -- $PY -m helpers.eval.evaluate "${EV[@]}" --model_name_or_path "$OUT/kd_qlora/merged_model_lora_epoch_1" --output_dir "$OUT/eval_half_merged"
step evaluate "$NT" queries -- $PY -m helpers.eval.evaluate --model_name_or_path "$OUT/kd_torchrun/merged_model_lora_epoch_1" --embedder_model_class decoder-only-icl --queries_file "$OUT/data/test_queries.jsonl" --corpus_file "$OUT/data/corpus.jsonl" --output_dir "$OUT/eval" --devices 0

BLOCK="{\"reranker_name_or_path\": \"$RERANKER\", \"reranker_max_length\": 256, \"reranker_batch_size\": 16, \"top_k\": 25, \"devices\": \"0\"}"
step cascade $((NT * 25)) pairs -- $PY -m helpers.eval.cascade --embedder_dir "$OUT/eval" --queries_file "$OUT/data/test_queries.jsonl" --corpus_file "$OUT/data/corpus.jsonl" --output_dir "$OUT/eval_cascade" --sweep_top_k 10,25 --sweep_alpha 0.5 --reranker "$BLOCK"
step submit_cascade 1 runs -- $PY -m helpers.eval.submission --model_name_or_path "$OUT/kd_torchrun/merged_model_lora_epoch_1" --embedder_model_class decoder-only-icl --test_csv data/demo/test.csv --misconception_csv data/demo/misconception_mapping.csv --output_file "$OUT/submission_cascade.csv" --devices 0 --reranker "$BLOCK"
if [ "${PROBE:-1}" = 1 ]; then
  step layer_probe 2 runs -- $PY bench/layer_probe.py --out "$OUT/probe"
fi
SUB=(--profile configs/submit.yaml --output_root "$OUT" --var data_dir=data/demo --var base_model="$EMBEDDER" --set embedder_batch_size=16)
step submit_run_all_adapter 1 runs -- $PY run_all.py "${SUB[@]}" --run_name submit_adapter --var student="$OUT/kd_qlora/lora_epoch_1" --set submission_file="$OUT/submission_adapter.csv"
step submit_run_all_merged 1 runs -- $PY run_all.py "${SUB[@]}" --run_name submit_merged --var student="$OUT/kd_torchrun/merged_model_lora_epoch_1" --set load_in_4bit=false --set submission_file="$OUT/submission_merged.csv"

$PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
a = [json.loads(l) for l in open(f"{out}/test_scored.jsonl")]
b = [json.loads(l) for l in open(f"{out}/test_scored_plain.jsonl")]
d = max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r["pos_scores"] + r["neg_scores"], s["pos_scores"] + s["neg_scores"]))
print(f"fast vs plain reranker path, max |diff| in half precision: {d:.4f}")
c = [json.loads(l) for l in open(f"{out}/test_scored_fp32.jsonl")]
d32 = max(abs(x - y) for r, s in zip(a, c) for x, y in zip(r["pos_scores"] + r["neg_scores"], s["pos_scores"] + s["neg_scores"]))
print(f"reranker in half precision vs fp32 (Gemma-3 overflows in fp16: a large value here says so), max |diff|: {d32:.4f}")
a2 = [json.loads(l) for l in open(f"{out}/test_scored_2workers.jsonl")]
d2 = max(abs(x - y) for r, s in zip(a, a2) for x, y in zip(r["pos_scores"] + r["neg_scores"], s["pos_scores"] + s["neg_scores"]))
print(f"reranker scores, two workers on the GPU vs one, max |diff|: {d2:.5f} (the order of the rows:",
      "same)" if [r["query_id"] for r in a] == [r["query_id"] for r in a2] else "DIFFERS)")
m1, m2 = (open(f"{out}/{f}").read() for f in ("train_mined.jsonl", "train_mined_2workers.jsonl"))
print("mined file, two workers vs one:", "byte-identical" if m1 == m2 else "DIFFERS")
for f in ("kd_torchrun", "kd_qlora", "kd_fp16_forced", "kd_ddp2_gloo", "kd_faults"):
    try:
        rows = [json.loads(l) for l in open(f"{out}/{f}/metrics.jsonl")]
        print(f, {k: rows[-1].get(k) for k in ("epoch", "eval_loss", "MAP@25", "Recall@25", "skipped_steps")})
    except OSError as e:
        print(f, "no metrics:", e)
try:
    json.load(open(f"{out}/kd_faults/loss_history.json"), parse_constant=lambda c: sys.exit(f"kd_faults: {c} in loss_history.json"))
    print("kd_faults: loss_history.json is valid JSON (no nan/inf)")
except OSError as e:
    print("kd_faults: no loss history:", e)
ways = {}
for name in ("eval_4bit_adapter", "eval_4bit_merged", "eval_half_merged"):
    try:
        ways[name] = json.load(open(f"{out}/{name}/metrics.json"))["MAP@25"]
    except OSError:
        ways[name] = None
try:
    per_epoch = [json.loads(l) for l in open(f"{out}/kd_qlora/metrics.jsonl")][-1].get("MAP@25")
except OSError:
    per_epoch = None
print("QLoRA adapter three ways, MAP@25 (per-epoch, in training:", per_epoch, "):", ways)
try:
    m = json.load(open(f"{out}/eval_cascade/metrics.json"))
    c = m["cascade"]
    print("cascade: MAP@25", round(c["embedder MAP@25"], 4), "->", round(m["MAP@25"], 4), "diff", round(c["diff"]["mean_diff"], 4),
          [round(c["diff"]["lo"], 4), round(c["diff"]["hi"], 4)], "in", c["seconds"], "s")
except OSError as e:
    print("cascade: no metrics:", e)
PY
[ -f "$OUT/probe/probe.json" ] && tail -n 1 "$OUT/layer_probe.log"
echo; echo "peak GPU memory per stage (the memory plan's estimate is the 'memory plan' line of the same log):"
grep -H "peak GPU memory\|memory plan" "$OUT"/*.log | sed "s#$OUT/##"
echo; echo "stage            wall        throughput"; printf '%s\n' "${REPORT[@]}"
exit $status
