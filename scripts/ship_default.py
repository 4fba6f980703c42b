"""Write a trained checkpoint as a shipped model (the default model,
``src/jfb/weights/natural.safetensors``, unless ``--out`` names another): its weights, step, config and the trainer's ``extra`` (no optimiser or RNG state), with
test-time settings of its config replaced (``--set``, as ``jfb train`` takes them).

    python scripts/ship_default.py runs/cost/deadmm-jfb/best.safetensors \
        --set model.solver.eval_max_iter=5 --set model.cg_iters=3 \
        [--out src/jfb/weights/faces.safetensors]

The model card (``src/jfb/weights/<name>.md``) is written by hand: say what changed and why.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jfb.config import Config
from jfb.pipeline import load_model
from jfb.train.checkpoint import save_checkpoint

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/jfb/weights/natural.safetensors"


def ship(src: Path, out: Path, overrides: list[str]) -> Config:
    """Copy ``src``'s model to ``out`` with its config's ``overrides``; returns that config.
    The weights are checked to load into the model the new config builds."""
    model, cfg, info = load_model(src, device="cpu")
    cfg = cfg.with_overrides(overrides)
    save_checkpoint(out, model=model, step=info["step"], config=cfg.to_dict(),
                    extra=info.get("extra") or {}, rng=False)
    load_model(out, device="cpu")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a config value to replace (repeatable)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    cfg = ship(args.checkpoint, args.out, args.overrides)
    print(f"written: {args.out} (eval_max_iter {cfg.model.solver.eval_max_iter}, "
          f"cg_iters {cfg.model.cg_iters}, precondition {cfg.model.precondition})")


if __name__ == "__main__":
    main()
