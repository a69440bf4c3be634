#!/usr/bin/env bash
# The recipe of the shipped `synth-tiny` model (leffa/assets/synth-tiny.safetensors), from nothing, on one CPU
# thread per run (about 5.4 hours on a quiet 2-core machine with the settings' --cache-latents; 7 hours without).
# Settings: examples/synth-tiny.toml.
# Measurements and curves: docs/synthetic.md.
#   examples/train-synth-tiny.sh [RUN_FOLDER]      (default runs/synth-tiny)
# Each step can be rerun: `leffa train` resumes from the run folder's latest checkpoint.
set -euo pipefail
RUN=${1:-runs/synth-tiny}
SIZE=64x48
STAGE1_STEPS=${STAGE1_STEPS:-5000}
STAGE3_STEPS=${STAGE3_STEPS:-4000}
SYNTH="--pattern-scale 2 --shading 0.6"   # garment stripes 2x wider; a colour ramp so patches differ
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # torch threads of the runs that run alone. 2 on a free 2-core machine:
                            # 0.74x the step time (benchmarks/train_step.py; about 4.6 hours in all); on a busy one 2
                            # threads were 17x slower. The runs side by side (steps 4 and 5) always take one each.

# 1. Data, drawn at the model's size, with the unpaired ground truth (each person also wearing the next sample's
#    garment: the last runs train on it, the test split scores against it; --unpaired leaves the paired files as
#    they are without it).
[ -f "$RUN/data/train_pairs_unpaired.txt" ] || \
  leffa prep synth --task vton --n 2048 --size $SIZE -o "$RUN/data" --seed 0 --unpaired $SYNTH
[ -f "$RUN/data/test_pairs_unpaired.txt" ] || \
  leffa prep synth --task vton --n 16 --size $SIZE -o "$RUN/data" --seed 0 --split test --unpaired $SYNTH

# 2. Base folder: the autoencoder trained on these images (two levels: latents at 1/2, 32x24x4; about 10 minutes),
#    random UNet weights with self-attention at levels 2 and 3 (16x12 and 8x6) and the middle block (4x3).
[ -f "$RUN/base/vae/diffusion_pytorch_model.safetensors" ] || \
  leffa prep synth-base --data "$RUN/data" -o "$RUN/base" --size $SIZE --steps 4000 \
    --vae-channels 32,64 --unet-channels 32,32,64,64 --unet-attention 2,3

# 3. Stage 1: diffusion loss only.
leffa train --config examples/synth-tiny.toml --stage 1 --data "$RUN/data" --base "$RUN/base" --init base \
  --output "$RUN/stage1" --max-steps "$STAGE1_STEPS" --no-leffa-loss --resume latest

# 4. Two equal continuations from stage 1, side by side (one thread each): with the Leffa loss (lambda 5, tau 1,
#    from examples/synth-tiny.toml; the shipped model continues it) and without it (the ablation's twin). Same
#    seed and settings, so both draw identical batches, noise and timesteps. With the loss the held-out attention finds the
#    correspondence (mean flow EPE 4.5 against 15.2 px) and masked PSNR is 1.4 dB higher (14.9/14.6 against
#    13.5/13.2 dB); with --seed 1 the EPE gain replicates, the image gain does not (docs/benchmarks.md, "Leffa
#    ablation: lambda and tau sweep at the recipe's length").
continue_run() {   # continue_run INIT OUTPUT --leffa-loss|--no-leffa-loss [OPTION...]: one stage-3 run of
                   # $STAGE3_STEPS steps unless an option says otherwise (a later --max-steps wins)
  leffa train --config examples/synth-tiny.toml --stage 3 --data "$RUN/data" --base "$RUN/base" \
    --init "$1" --output "$2" --max-steps "$STAGE3_STEPS" "${@:3}" --resume latest
}
OMP_NUM_THREADS=1 continue_run "$RUN/stage1/model.safetensors" "$RUN/final" --leffa-loss &
OMP_NUM_THREADS=1 continue_run "$RUN/stage1/model.safetensors" "$RUN/final-noleffa" --no-leffa-loss &
wait

# 5. Longer: each arm continues for 4,000 more steps (a fresh run from the last one's model: the learning rate
#    warms up again and the EMA restarts), side by side; then the Leffa arm once more, alone. Training longer is
#    what moved the images in the shipped run: masked PSNR 14.9 -> 18.3 -> 19.2 dB (the twin: 13.5 -> 14.0); a
#    replicate with --seed 1 did not take off (docs/benchmarks.md, "Longer continuations").
OMP_NUM_THREADS=1 continue_run "$RUN/final/model.safetensors" "$RUN/final-8k" --leffa-loss &
OMP_NUM_THREADS=1 continue_run "$RUN/final-noleffa/model.safetensors" "$RUN/final-noleffa-8k" --no-leffa-loss &
wait
continue_run "$RUN/final-8k/model.safetensors" "$RUN/final-12k" --leffa-loss

# 6. The end: 2,000 steps with a new batch order (--seed 2), then 6,000 more (--seed 3) with the learning rate
#    decayed to 0 on a cosine. Masked PSNR on 32 held-out samples: 19.65 -> 19.93 -> 20.93; a constant rate lower
#    for the last 2,000 steps (1e-4 or 3e-4) gave 20.48-20.52 (docs/benchmarks.md, "The end of training").
continue_run "$RUN/final-12k/model.safetensors" "$RUN/final-14k" --leffa-loss --max-steps 2000 --seed 2
continue_run "$RUN/final-14k/model.safetensors" "$RUN/final-20k" --leffa-loss --max-steps 6000 --seed 3 \
  --lr-scheduler cosine

# 7. The unpaired ground truth joins the data (--unpaired-truth: each person also wearing the next sample's garment,
#    under the person's own mask, so the mask stops giving the garment's shape away): 3,000 steps with the rate
#    cosine-decayed from 1e-3 (--seed 4), then 4,000 from 3e-4 (--seed 6). Masked PSNR on all 64 held-out pairs,
#    paired / unpaired: 20.33 / 19.44 -> 20.16 / 20.24 (docs/benchmarks.md, "Training on the unpaired ground truth").
continue_run "$RUN/final-20k/model.safetensors" "$RUN/final-23k" --leffa-loss --max-steps 3000 --seed 4 \
  --lr-scheduler cosine --unpaired-truth
continue_run "$RUN/final-23k/model.safetensors" "$RUN/final-27k" --leffa-loss --max-steps 4000 --seed 6 --lr 3e-4 \
  --lr-scheduler cosine --unpaired-truth

# 8. Two more of those, each 4,000 steps cosine-decayed from 3e-4 with a new batch order (--seed 7, then --seed 9):
#    20.16 / 20.24 -> 20.27 / 20.37 -> 20.37 / 20.48 on all 64 held-out pairs.
continue_run "$RUN/final-27k/model.safetensors" "$RUN/final-31k" --leffa-loss --max-steps 4000 --seed 7 --lr 3e-4 \
  --lr-scheduler cosine --unpaired-truth
continue_run "$RUN/final-31k/model.safetensors" "$RUN/final-35k" --leffa-loss --max-steps 4000 --seed 9 --lr 3e-4 \
  --lr-scheduler cosine --unpaired-truth

echo "model: $RUN/final-35k/model.safetensors (cp it to leffa/assets/synth-tiny.safetensors to ship it)"
