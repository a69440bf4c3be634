"""Keep the frozen VAE's posterior of every training sample, so each image is encoded once per run, not once per step.

Training encodes three images per sample and step (the target, the target with the mask blanked, the reference)
with a VAE that never changes. Without augmentation those images are the same every epoch, so their posterior
parameters (mean and log-variance, ``LeffaModel.encode_moments``) are too; a new latent is still drawn from them at
every step with the run's generator, consuming the same random numbers in the same order as encoding would. On the
synth-tiny recipe this is about a quarter of a CPU step (docs/benchmarks.md, "Caching the VAE's latents").

Memory: 3 x 2C x h x w values per sample in the VAE's dtype, kept on the CPU (synth-tiny: 74 KB per sample; a
1024x768 SD1.5 model: 1.2 MB in fp32), filled during the first epoch.
"""

from __future__ import annotations

import torch

from leffa.model import LeffaModel


def encode_step_images(
    model: LeffaModel, image: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The posterior parameters, each (B, 2C, h, w), of the three images a training step encodes: the target
    (B, 3, H, W), the target with the mask (B, 1, H, W) blanked, and the reference. Every step's encoding and the
    cache's first one go through here."""
    return (
        model.encode_moments(image),
        model.encode_moments(image * (1 - mask)),
        model.encode_moments(reference),
    )


class LatentCache:
    """Posterior parameters per dataset index: ``(3, 2C, h, w)`` for (target, masked target, reference)."""

    def __init__(self) -> None:
        self._moments: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._moments)

    @torch.no_grad()
    def moments(self, model: LeffaModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target, masked target, reference) posterior parameters, each (B, 2C, h, w) on the model's device,
        encoding only the samples of ``batch`` (which carries its dataset ``index``, (B,)) not seen before."""
        indices = [int(i) for i in batch["index"]]
        missing = [row for row, index in enumerate(indices) if index not in self._moments]
        if missing:
            rows = torch.tensor(missing)
            images = (batch[key][rows].to(model.device) for key in ("image", "mask", "reference"))
            encoded = torch.stack(encode_step_images(model, *images), dim=1).cpu()  # (missing, 3, 2C, h, w)
            for row, moments in zip(missing, encoded, strict=True):
                self._moments[indices[row]] = moments.clone()
        stacked = torch.stack([self._moments[index] for index in indices]).to(model.device)  # (B, 3, 2C, h, w)
        return stacked[:, 0], stacked[:, 1], stacked[:, 2]
