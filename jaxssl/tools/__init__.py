"""Command-line tools over a training workdir, each `python -m jaxssl.tools.<name> --workdir W`.

* `features`: export frozen backbone features of a split to an npz (`--teacher` for the EMA teacher).
* `eval`: kNN (both protocols), linear probe and collapse monitors of a checkpoint, as JSON.
* `export`: the backbone as timm/torchvision `safetensors` + a JSON model card (`--teacher` likewise).
* `plot`: metric curves of `metrics.jsonl` (and an embedding plot of exported features) as PNG.

Each restores weights through `jaxssl.evaluate.restore` and embeds through
`jaxssl.evaluate.features`, the same path as the trainer's evaluators.
"""
