#!/usr/bin/env bash
# Rebuilds docs/images/viz-flow-synth.png: `leffa viz-flow` on one synthetic try-on sample (leffa prep synth) with a
# tiny randomly initialised model (the test fixture architecture, seed 0). Run from the repository root.
set -euo pipefail
WORK=${WORK:-$(mktemp -d)}
leffa prep synth -o "$WORK/synth" --task vton --n 1 --size 256x192 --seed 0
python - "$WORK/tiny-random.safetensors" <<'PY'
import sys

import torch

from leffa.checkpoint import save_model
from leffa.model import LeffaModel

torch.manual_seed(0)
model = LeffaModel.from_base_folder("tests/fixtures/upstream_parity/stable-diffusion-inpainting")
model.config.extra["image_size"] = [256, 192]
save_model(model, sys.argv[1], dtype="fp32")
PY
D="$WORK/synth/train"
leffa viz-flow "$D/image/000000.jpg" "$D/cloth/000000.jpg" \
  --mask "$D/agnostic-mask/000000_mask.png" --densepose "$D/image-densepose/000000.jpg" \
  --target "$D/image/000000.jpg" --gt-flow "$D/gt-flow/000000.npy" \
  --model "$WORK/tiny-random.safetensors" --t 250 --seed 0 \
  --layers down0.a0.b0,down1.a0.b0,down2.a0.b0,up3.a2.b0 --points "96,110 70,150" \
  --html "$WORK/viz-flow.html" -o docs/images/viz-flow-synth.png

# docs/images/viz-flow-ideal.png: the same sample drawn through the Python API (render_flow_grid, as training dumps
# call it) with the best flow a layer of each resolution can express (ideal_token_flow: the ground truth averaged per
# token, upsampled as the Leffa loss does); the EPE captions are the resolution floor of each layer.
python - "$D" <<'PY'
import sys

from leffa.atomic import save_image
from leffa.flow_probe import load_gt_flow, load_image, load_mask
from leffa.viz.render import ideal_token_flow, render_flow_grid

folder, size = sys.argv[1], (256, 192)
reference = load_image(f"{folder}/cloth/000000.jpg", size, "GARMENT")
target = load_image(f"{folder}/image/000000.jpg", size, "PERSON")
mask = load_mask(f"{folder}/agnostic-mask/000000_mask.png", size)
gt_flow = load_gt_flow(f"{folder}/gt-flow/000000.npy", size)
flows = {f"ideal{scale}": ideal_token_flow(gt_flow, (size[0] // scale, size[1] // scale)) for scale in (8, 16, 32, 64)}
save_image(render_flow_grid(reference, flows, target=target, mask=mask, gt_flow=gt_flow), "docs/images/viz-flow-ideal.png")
print("wrote docs/images/viz-flow-ideal.png")
PY
