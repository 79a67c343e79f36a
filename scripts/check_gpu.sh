#!/usr/bin/env bash
# bf16 training throughput on this machine's GPUs: the DCGAN 64 px template (configs/templates/dcgan_64.yaml:
# paper widths, batch 128 per GPU) on every visible GPU, under ddp_gan (with and without channels_last) and
# deepspeed_gan ZeRO-1 and ZeRO-2. Data: the bundled scikit-learn digits written as 64 px RGB shards (tiny,
# so the data loader is not what is measured).
#
#   bash scripts/check_gpu.sh [STEPS]       # STEPS generator steps per config (default 300)
#   bash scripts/check_gpu.sh --cpu-smoke   # no GPU needed: 2 steps per config on 2 CPU processes, batch 8,
#                                           # to check that the commands run (its images/s mean nothing)
#
# images/s = real images shown to D per second, all GPUs together, over the last 50 batches of the run
# (RunSummaryCallback's perf/images_per_s, the last value logged); training s = wall time from the first
# batch to the end (start-up excluded). PYTHON names an interpreter with CUDA torch and ganforge's
# requirements (default: python3). Runs go to a temporary directory, kept when a run fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

steps=300
case "${1:-}" in
  --cpu-smoke) steps=2 ;;
  "") ;;
  *) steps=$1 ;;
esac
if [ "${1:-}" = "--cpu-smoke" ]; then
  gpus=0
  hardware=(--trainer.accelerator cpu --trainer.devices 2 --data.init_args.batch_size 8
            --data.init_args.num_workers 1 --data.init_args.pin_memory false)
  export DS_ACCELERATOR=cpu OMP_NUM_THREADS=1
else
  gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())')
  if [ "$gpus" -eq 0 ]; then
    echo "check_gpu.sh: no CUDA GPU visible to torch (torch.cuda.device_count() == 0); run it on a GPU machine," \
         "or pass --cpu-smoke to check the commands on CPU" >&2
    exit 1
  fi
  hardware=(--trainer.accelerator gpu --trainer.devices -1)
fi

work=$(mktemp -d)
export TORCH_EXTENSIONS_DIR="$work/torch_extensions"
"$py" -m pipeline.commands.cli shards --source sklearn-digits --resolution 64 --channels 3 --out "$work/digits64" >/dev/null

rows=()
run_config() {  # NAME STRATEGY CHANNELS_LAST
  local run="$work/run${#rows[@]}"
  local logger="{\"class_path\": \"pytorch_lightning.loggers.CSVLogger\", \"init_args\": {\"save_dir\": \"$run\"}}"
  echo "== $1: $steps steps, log in $run.log" >&2
  if ! "$py" -m pipeline.commands.cli fit --config "$root/configs/templates/dcgan_64.yaml" "${hardware[@]}" \
      --trainer.strategy "$2" --model.init_args.channels_last "$3" --trainer.precision bf16-mixed \
      --trainer.max_steps "$steps" --trainer.log_every_n_steps 1 --trainer.enable_progress_bar false \
      --trainer.default_root_dir "$run" --trainer.logger "$logger" \
      --trainer.callbacks '[{"class_path": "pipeline.callbacks.run_summary.RunSummaryCallback"}]' \
      --data.init_args.index "$work/digits64/shards.json" >"$run.log" 2>&1; then
    tail -n 30 "$run.log" >&2
    echo "check_gpu.sh: $1 failed; full log: $run.log" >&2
    exit 1
  fi
  rows+=("$("$py" - "$run" "$1" <<'EOF'
import csv, glob, sys
run, name = sys.argv[1:]
rows = list(csv.DictReader(open(glob.glob(f"{run}/lightning_logs/version_*/metrics.csv")[0])))
images_per_s = [float(r["perf/images_per_s"]) for r in rows if r.get("perf/images_per_s")]
seconds = [float(r["run/wall_time_s"]) for r in rows if r.get("run/wall_time_s")]
print(f"| {name:<29} | {images_per_s[-1]:>10.0f} | {seconds[-1]:>10.1f} |")
EOF
)")
}

deepspeed='{"class_path": "pipeline.strategies.deepspeed_gan.DeepSpeedGANStrategy", "init_args": {"zero_stage": %d}}'
# ZeRO-1/2 keep the weights as views of one flat buffer, which rules out channels_last: compare all without it.
run_config "ddp_gan, channels_last" ddp_gan true
run_config "ddp_gan" ddp_gan false
run_config "deepspeed_gan ZeRO-1" "$(printf "$deepspeed" 1)" false
run_config "deepspeed_gan ZeRO-2" "$(printf "$deepspeed" 2)" false

"$py" - "$gpus" "$steps" <<'EOF'
import sys, torch
gpus, steps = sys.argv[1:]
where = f"{gpus} x {torch.cuda.get_device_name(0)}" if int(gpus) else "2 CPU processes (smoke test: not a measurement)"
print(f"DCGAN 64 px (configs/templates/dcgan_64.yaml), bf16-mixed, {steps} generator steps, {where}")
EOF
echo "| config                        |   images/s | training s |"
echo "|-------------------------------|------------|------------|"
printf '%s\n' "${rows[@]}"
rm -rf "$work"
