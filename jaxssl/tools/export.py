r"""Export a trained backbone as PyTorch weights: ``python -m jaxssl.tools.export``.

  python -m jaxssl.tools.export --workdir workdirs/dino --format timm --output dino_vits16.safetensors [--teacher]

Restores the backbone of the newest (or ``--step``) checkpoint (the student's, or with
``--teacher`` the EMA teacher's), writes it as ``safetensors`` in the keys, shapes and layouts of
the matching timm (``--format timm``) or torchvision (``--format torchvision``) model
(`jaxssl.models.pytorch_layout`), and a JSON model card beside it (``<output>.json``: method,
step, config, input size and normalisation, and the PyTorch code that creates the model the file
loads into with ``strict=True``). The way back is ``--config.init_from=PATH`` of the trainer.
"""
from __future__ import annotations

import json
import os
import sys

import jax

from jaxssl.evaluate import restore
from jaxssl.models import pytorch_layout
from jaxssl.tools import _args


def _input(config: dict) -> dict:
    """Input size and normalisation of the run (its evaluation view, else its first training view)."""
    views = list((config.get("input") or {}).get("views") or [])
    view = ((config.get("evals") or {}).get("knn") or {}).get("view") or (views[0] if views else {})
    size = views[0].get("crop_size") if views else config.get("model", {}).get("img_size")
    return {"image_size": size, "mean": view.get("mean"), "std": view.get("std"),
            "convention": "NCHW float32 in PyTorch: (pixels / 255 - mean) / std"}


def export(workdir: str, output: str, *, layout: str = "timm", teacher: bool = False,
           step: int | None = None) -> dict:
    """Write the run's backbone to `output` (safetensors) and its model card to `output + ".json"`.

    Returns the model card (also what was written).
    """
    loaded = restore.load(workdir, step=step, teacher=teacher)
    model_cfg = dict(loaded.config["model"])
    variables = jax.tree_util.tree_map(jax.device_get, pytorch_layout.backbone_variables(loaded.variables))
    tensors, info = pytorch_layout.to_torch(model_cfg, variables, layout, num_batches_tracked=loaded.step)
    try:
        torch_model = pytorch_layout.torch_model(model_cfg, layout)
    except ValueError as e:  # the weights are still exact; no stock model has this shape
        torch_model = {"error": str(e)}
    card = {"file": os.path.basename(output), "format": "safetensors", "layout": layout,
            "method": loaded.config.get("method"), "step": loaded.step, "teacher": teacher,
            "workdir": os.path.abspath(workdir), "model": model_cfg, "input": _input(loaded.config),
            "torch_model": torch_model, "dropped": info["dropped"], "config": loaded.config}
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        pytorch_layout.save(output, tensors, layout=layout, model_cfg=model_cfg)
        with open(output + ".json", "w") as f:
            json.dump(card, f, indent=1, default=str)
    return card


def main(argv=None) -> int:
    parser = _args.parser("export", __doc__)
    parser.add_argument("--output", required=True, help="safetensors file to write (and OUTPUT.json, the model card)")
    parser.add_argument("--format", default="timm", choices=pytorch_layout.LAYOUTS, help="PyTorch layout")
    _args.add_checkpoint(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        card = export(args.workdir, args.output, layout=args.format, teacher=args.teacher, step=args.step)
        if jax.process_index() == 0:
            print(f"Wrote {args.output} ({args.format} layout, step {card['step']}) and {args.output}.json")
            print(card["torch_model"].get("code") or card["torch_model"]["error"])
        return 0

    return _args.run(body)


if __name__ == "__main__":
    sys.exit(main())
