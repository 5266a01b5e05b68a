"""The trained lesson models through qlab's int8 pipeline, against torch.ao's, on real digits."""

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq

import qlab
from qlab.convert import minmax_qconfig
from qlab.lab import checkpoints, data

pytestmark = pytest.mark.filterwarnings("ignore:.*quantiz.*deprecated:UserWarning")

TORCH_QCONFIG = tq.QConfig(
    activation=tq.MinMaxObserver.with_args(reduce_range=True),
    weight=tq.default_per_channel_weight_observer,
)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("name", ["resnet", "mobilenet_v2"])
def test_trained_cnn_int8_matches_torch_ao(name):
    torch.backends.quantized.engine = "x86"
    float_model = checkpoints.load_model(name)
    float_model.fuse_model()
    calib, _ = data.digits_tensors("train")
    x, y = data.digits_tensors("test")
    ours = qlab.prepare(copy.deepcopy(float_model), minmax_qconfig)
    theirs = copy.deepcopy(float_model)
    theirs.qconfig = TORCH_QCONFIG
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        theirs = tq.prepare(theirs)
        for batch in calib[:256].split(64):
            ours(batch)
            theirs(batch)
        theirs = tq.convert(theirs)
        ours = qlab.convert(ours)
        a, b = ours(x), theirs(x)
    same = (a.argmax(1) == b.argmax(1)).float().mean().item()
    acc_fp32 = accuracy(float_model, x, y)
    acc_ours, acc_theirs = accuracy(ours, x, y), accuracy(theirs, x, y)
    print(f"{name}: fp32 {acc_fp32:.4f}, qlab int8 {acc_ours:.4f}, torch.ao int8 {acc_theirs:.4f}, "
          f"same predictions {same:.4f}")
    assert same >= 0.99
    assert abs(acc_ours - acc_theirs) <= 0.01
    assert acc_ours >= acc_fp32 - 0.02  # min-max PTQ on digits costs at most a couple of points
    # the int8 model really stores int8 weights and is about 4x smaller
    assert qlab.metrics.model_size_bytes(ours) < 0.4 * qlab.metrics.model_size_bytes(float_model)
