"""Training curves as a table: the mean of each logged loss per window of steps, from the log lines `leffa train`
writes when its output is not a terminal (``HH:MM:SS  step N/M  loss X  diffusion Y  leffa Z  lr ...``).

    python benchmarks/train_curves.py stage1=runs/synth-tiny/stage1.log final=runs/synth-tiny/final.log --every 1000

prints one markdown row per run and window (docs/synthetic.md, "Training curves"), and the mean steps/s.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

LINE = re.compile(r"step (\d+)/\d+\s+(.*)")
FIELD = re.compile(r"([a-z_]+) ([-+0-9.e]+)")


def read_log(path: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, {field: value}) for every step line of one log; a resumed run's repeated steps keep the last."""
    rows: dict[int, dict[str, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.search(line)
        if match:
            fields = {name: float(value) for name, value in FIELD.findall(match.group(2))}
            speed = re.search(r"([0-9.]+) steps/s", line)
            if speed:
                fields["steps_per_s"] = float(speed.group(1))
            rows[int(match.group(1))] = fields
    return sorted(rows.items())


def windows(rows: list[tuple[int, dict[str, float]]], every: int) -> list[tuple[int, int, dict[str, float]]]:
    """Mean of each field over steps (k * every, (k + 1) * every], for every window that has a logged step."""
    grouped: dict[int, list[dict[str, float]]] = {}
    for step, fields in rows:
        grouped.setdefault((step - 1) // every, []).append(fields)
    out = []
    for k, group in sorted(grouped.items()):
        names = {name for fields in group for name in fields}
        means = {name: sum(f[name] for f in group if name in f) / sum(name in f for f in group) for name in names}
        out.append((k * every + 1, min((k + 1) * every, max(step for step, _ in rows)), means))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", help="NAME=LOG (or a log path, named after its file)")
    parser.add_argument("--every", type=int, default=1000)
    args = parser.parse_args()
    print("| run | steps | diffusion loss | Leffa loss (unweighted) | steps/s |")
    print("|---|---|---|---|---|")
    for spec in args.logs:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        for first, last, means in windows(read_log(path), args.every):
            leffa = f"{means['leffa']:.4f}" if "leffa" in means else "-"
            speed = f"{means['steps_per_s']:.2f}" if "steps_per_s" in means else "-"
            print(
                f"| {name or path.stem} | {first}-{last} | {means.get('diffusion', float('nan')):.4f} | {leffa} | {speed} |"
            )


if __name__ == "__main__":
    main()
