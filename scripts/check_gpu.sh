#!/usr/bin/env bash
# bf16 training throughput on this machine's GPUs: the DCGAN 64 px template (configs/templates/dcgan_64.yaml:
# paper widths, batch 128 per GPU) on every visible GPU, under ddp_gan (with and without channels_last, eager and
# with model.compile, with and without the all-reduce overlapped with the backward) and deepspeed_gan ZeRO-1 and
# ZeRO-2; then, where the templates exist, StyleGAN2 and R3GAN at 256 px under ddp_gan, eager and compiled.
# Data: the bundled scikit-learn digits written as RGB shards at each template's resolution (tiny, so the data
# loader is not what is measured).
#
#   bash scripts/check_gpu.sh [STEPS]       # STEPS generator steps per config (default 300)
#   bash scripts/check_gpu.sh --cpu-smoke   # no GPU needed: 2 steps per config on 2 CPU processes, batch 8,
#                                           # to check that the commands run (its images/s mean nothing)
#
# images/s = real images shown to D per second, all GPUs together, over the last 50 batches of the run
# (RunSummaryCallback's perf/images_per_s, the last value logged); s/kimg = 1000 / images/s; training s = wall
# time from the first batch to the end (start-up excluded; a compiled run's includes its compilation). PYTHON names an interpreter with CUDA torch and ganforge's
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
compile_args=(--model.init_args.compile true)
if [ "${1:-}" = "--cpu-smoke" ]; then
  gpus=0
  hardware=(--trainer.accelerator cpu --trainer.devices 2 --data.init_args.batch_size 8
            --data.init_args.num_workers 1 --data.init_args.pin_memory false)
  compile_args+=(--model.init_args.compile_backend aot_eager)  # traced, no C++ built: minutes less on a CPU
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

rows=()
run_config() {  # NAME TEMPLATE STRATEGY CHANNELS_LAST [EXTRA ARGS...]
  local name=$1 template=$2 strategy=$3 channels_last=$4
  shift 4
  local run="$work/run${#rows[@]}"
  local resolution
  resolution=$(grep -m1 -oE 'resolution: *[0-9]+' "$root/configs/templates/$template.yaml" | grep -oE '[0-9]+')
  if [ ! -d "$work/digits$resolution" ]; then
    "$py" -m pipeline.commands.cli shards --source sklearn-digits --resolution "$resolution" --channels 3 \
      --out "$work/digits$resolution" >/dev/null
  fi
  local logger="{\"class_path\": \"pytorch_lightning.loggers.CSVLogger\", \"init_args\": {\"save_dir\": \"$run\"}}"
  echo "== $name: $steps steps, log in $run.log" >&2
  if ! "$py" -m pipeline.commands.cli fit --config "$root/configs/templates/$template.yaml" "${hardware[@]}" \
      --trainer.strategy "$strategy" --model.init_args.channels_last "$channels_last" --trainer.precision bf16-mixed \
      --trainer.max_steps "$steps" --trainer.log_every_n_steps 1 --trainer.enable_progress_bar false \
      --trainer.default_root_dir "$run" --trainer.logger "$logger" \
      --trainer.callbacks '[{"class_path": "pipeline.callbacks.run_summary.RunSummaryCallback"}]' \
      --data.init_args.index "$work/digits$resolution/shards.json" "$@" >"$run.log" 2>&1; then
    tail -n 30 "$run.log" >&2
    echo "check_gpu.sh: $name failed; full log: $run.log" >&2
    exit 1
  fi
  rows+=("$("$py" - "$run" "$name" <<'EOF'
import csv, glob, sys
run, name = sys.argv[1:]
rows = list(csv.DictReader(open(glob.glob(f"{run}/lightning_logs/version_*/metrics.csv")[0])))
images_per_s = [float(r["perf/images_per_s"]) for r in rows if r.get("perf/images_per_s")]
seconds = [float(r["run/wall_time_s"]) for r in rows if r.get("run/wall_time_s")]
print(f"| {name:<41} | {images_per_s[-1]:>10.0f} | {1000 / images_per_s[-1]:>7.2f} | {seconds[-1]:>10.1f} |")
EOF
)")
}

deepspeed='{"class_path": "pipeline.strategies.deepspeed_gan.DeepSpeedGANStrategy", "init_args": {"zero_stage": %d}}'
# ZeRO-1/2 keep the weights as views of one flat buffer, which rules out channels_last: compare all without it.
no_overlap='{"class_path": "pipeline.strategies.two_player_ddp.TwoPlayerDDPStrategy", "init_args": {"overlap": false}}'
run_config "DCGAN-64 ddp_gan, channels_last" dcgan_64 ddp_gan true
run_config "DCGAN-64 ddp_gan, channels_last, compiled" dcgan_64 ddp_gan true "${compile_args[@]}"
run_config "DCGAN-64 ddp_gan" dcgan_64 ddp_gan false
run_config "DCGAN-64 ddp_gan, no overlap" dcgan_64 "$no_overlap" false
run_config "DCGAN-64 deepspeed_gan ZeRO-1" dcgan_64 "$(printf "$deepspeed" 1)" false
run_config "DCGAN-64 deepspeed_gan ZeRO-2" dcgan_64 "$(printf "$deepspeed" 2)" false
for template in stylegan2_256 r3gan_256; do  # templates of the StyleGAN2 and R3GAN work, where they exist
  if [ -f "$root/configs/templates/$template.yaml" ]; then
    run_config "$template ddp_gan" "$template" ddp_gan false
    run_config "$template ddp_gan, compiled" "$template" ddp_gan false "${compile_args[@]}"
  fi
done

"$py" - "$gpus" "$steps" <<'EOF'
import sys, torch
gpus, steps = sys.argv[1:]
where = f"{gpus} x {torch.cuda.get_device_name(0)}" if int(gpus) else "2 CPU processes (smoke test: not a measurement)"
print(f"configs/templates/, bf16-mixed, {steps} generator steps, {where}")
EOF
echo "| config                                    |   images/s |  s/kimg | training s |"
echo "|-------------------------------------------|------------|---------|------------|"
printf '%s\n' "${rows[@]}"
rm -rf "$work"
