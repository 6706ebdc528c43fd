import json
import os

import pytest
import torch

from edgeseg.checkpoint import (
    CheckpointSpec,
    import_weights,
    load_checkpoint,
    load_foreign_state_dict,
    read_spec,
    save_checkpoint,
)
from edgeseg.data import PreprocessSpec
from edgeseg.errors import EdgesegError

KW = dict(base=4, depth=2, embed_dim=16, num_heads=2, num_layers=1, img_size=32)


def _spec(**over):
    base = dict(arch="hybrid", arch_kwargs=KW, in_channels=2, num_classes=3, label_names=["bg", "a", "b"],
                preprocessing=PreprocessSpec((32, 32), ["t1", "t2"]), data={"fingerprint": "abc"},
                metrics={"val": {"mean": {"a": {"dice": 0.9}}}})
    return CheckpointSpec(**{**base, **over})


def test_roundtrip_preserves_weights_and_spec(tmp_path):
    spec = _spec()
    model = spec.build_model().eval()
    path = save_checkpoint(tmp_path / "m.ckpt", model, spec)
    loaded, spec2 = load_checkpoint(path)
    assert spec2.to_dict() == spec.to_dict()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert read_spec(path).preprocessing == spec.preprocessing
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temp file left behind


def test_checkpoint_is_plain_safetensors_without_pickle(tmp_path):
    path = save_checkpoint(tmp_path / "m.ckpt", _spec().build_model(), _spec())
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["edgeseg"])["arch"] == "hybrid"


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(EdgesegError, match="not a safetensors checkpoint"):
        read_spec(bad)
    with pytest.raises(EdgesegError, match="not found"):
        read_spec(tmp_path / "missing.ckpt")


def test_newer_format_is_refused():
    d = _spec().to_dict()
    d["format_version"] = 99
    with pytest.raises(EdgesegError, match="newer"):
        CheckpointSpec.from_dict(d)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/edgeseg_pwned",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    target = "/tmp/edgeseg_pwned"
    if os.path.exists(target):
        os.remove(target)
    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Exploit()}, evil)
    with pytest.raises(EdgesegError, match="refused"):
        load_foreign_state_dict(evil)
    assert not os.path.exists(target)


def test_foreign_state_dict_imports(tmp_path):
    spec = _spec()
    model = spec.build_model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    out = import_weights(tmp_path / "w.pth", _spec(), tmp_path / "w.ckpt")
    loaded, spec2 = load_checkpoint(out)
    assert spec2.training["imported_from"] == "w.pth"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "w.pth")
    with pytest.raises(EdgesegError, match="do not fit"):
        import_weights(tmp_path / "w.pth", _spec(), tmp_path / "w.ckpt")
    assert not (tmp_path / "w.ckpt").exists()
