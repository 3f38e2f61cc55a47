"""TEMPORARY stub (replaced by the defaults module from the validation work): optional keys' defaults."""
FSDP_MIN_SIZE = 2**16

OPTIONAL = dict(dtype="float32", progress_bar=True, nonfinite="raise", nonfinite_patience=10, accum_steps=1,
                mesh=dict(fsdp=1, fsdp_min_size=FSDP_MIN_SIZE))
DATA = dict(split="train", data_dir="", prepare_offline=True, worker_count=0, seq_len=512, sample_rate=16_000,
            clip_seconds=1.0)
_ALL = {**OPTIONAL, "data": DATA}


def get(config, key: str):
    node, default = config, _ALL
    for part in key.split("."):
        default = default[part] if isinstance(default, dict) and part in default else None
        node = node[part] if node is not None and part in node else None
    if node is None:
        if default is None:
            raise KeyError(key)
        return default
    return node
