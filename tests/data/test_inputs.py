"""jaxssl.data.inputs: the input of a run chosen from config.data; process-local rows of text and speech.

P processes together must feed exactly the global batch one process feeds (train) and cover every
evaluation example exactly once (eval), which is what `make_array_from_process_local_data` and the
evaluators' all-gather assume. Checked in-process by passing process_index/process_count.
"""
import numpy as np
import pytest

from configs import data2vec_speech_fsdd, data2vec_text_shakespeare, simclr_cifar10
from jaxssl.data import inputs


def _speech():
    config = data2vec_speech_fsdd.get_config("runlocal")
    config.batch_size = 8
    return config


def test_kind_and_input_key_follow_the_dataset_name():
    for module, kind, key in ((simclr_cifar10, "image", "image"), (data2vec_text_shakespeare, "text", "inputs"),
                              (data2vec_speech_fsdd, "audio", "inputs")):
        config = module.get_config("runlocal")
        assert inputs.kind(config) == kind and inputs.input_key(config) == key
        assert inputs.example(config).shape[0] == 2


@pytest.mark.parametrize("make", [_speech, lambda: data2vec_text_shakespeare.get_config("runlocal")])
def test_processes_split_the_global_batch_of_one_process(make):
    config = make()
    one = inputs.train_iter(config, "", process_index=0, process_count=1)
    two = [inputs.train_iter(config, "", process_index=i, process_count=2) for i in range(2)]
    for _ in range(3):
        whole = next(one)
        halves = [next(it) for it in two]
        for k in whole:
            assert halves[0][k].shape[0] == whole[k].shape[0] // 2
            np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])
    assert two[0].get_state() == one.get_state() == {"step": 3, "seed": 0}  # the state is global


def test_speech_eval_pass_covers_every_clip_once_over_processes():
    config = _speech()
    one = list(inputs.eval_iter(config, "test", batch_size=64, data_dir_="", process_index=0, process_count=1))
    parts = [list(inputs.eval_iter(config, "test", batch_size=32, data_dir_="", process_index=i, process_count=2))
             for i in range(2)]
    assert len(parts[0]) == len(parts[1])  # every process runs the same number of batches (collectives)
    take = lambda batches, k: np.concatenate([b[k][b["mask"]] for b in batches])
    for k in ("inputs", "label"):
        np.testing.assert_array_equal(np.concatenate([take(p, k) for p in parts]), take(one, k))
    assert len(take(one, "label")) == 300  # FSDD's official test split
    assert all((b["label"][~b["mask"]] == -1).all() for p in parts for b in p)


def test_text_has_no_labels_for_evaluators():
    config = data2vec_text_shakespeare.get_config("runlocal")
    with pytest.raises(ValueError, match="config.evals"):
        inputs.eval_iter(config, "validation", batch_size=8, data_dir_="")
