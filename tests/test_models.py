import subprocess
import sys

import pytest
import timm
import torch
from typer.testing import CliRunner

from monkeyreport.architectures import ARCHITECTURES
from monkeyreport.cli import app
from monkeyreport.models import WeightsError, count_parameters, create, get_architecture, list_architectures

from conftest import REPO


def test_parameter_counts_match_the_report():
    total, trainable = count_parameters(create("alexnet", frozen=False).model)
    assert total == trainable == 11_918_154
    vanilla, _ = count_parameters(create("vanilla_cnn").model)
    assert 1_400_000 < vanilla < 1_550_000


@pytest.mark.parametrize("arch, hidden", [("resnet34", 256), ("efficientnet_b0", 512), ("alexnet", 1024)])
def test_frozen_trains_only_the_head(arch, hidden):
    model = create(arch, num_classes=10, frozen=True).model
    head = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model)[1] == head
    assert model.head[0].out_features == hidden and model.head[-1].out_features == 10


def test_frozen_backbone_stays_in_eval_mode_and_keeps_batchnorm_statistics():
    model = create("resnet34", frozen=True).model
    model.train()
    assert not model.backbone.training and model.head.training
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.backbone.bn1.running_mean, before)
    finetuned = create("resnet34", frozen=False).model.train()
    finetuned(torch.randn(2, 3, 64, 64))
    assert finetuned.backbone.training


def test_unavailable_imagenet_weights_fail_with_the_ways_out(monkeypatch):
    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return original(*args, pretrained=pretrained, **kwargs)

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError) as info:
        create("resnet34", pretrained="imagenet")
    message = str(info.value)
    assert message.startswith("resnet34: cannot get ImageNet weights (OSError")
    assert 'pretrained = "none"' in message and "local state dict" in message
    assert "\n" not in message


def test_local_state_dict_is_loaded_and_checked(tmp_path):
    source = create("resnet34").model.backbone.state_dict()
    path = tmp_path / "resnet34.pth"
    torch.save(source, path)
    loaded = create("resnet34", pretrained=str(path)).model.backbone.state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source)
    torch.save(create("efficientnet_b0").model.backbone.state_dict(), tmp_path / "b0.pth")
    with pytest.raises(WeightsError, match="resnet34: .*b0.pth lacks"):
        create("resnet34", pretrained=str(tmp_path / "b0.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        create("resnet34", pretrained=str(tmp_path / "missing.pth"))


def test_weights_file_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": object()}, path)  # needs full unpickling
    with pytest.raises(WeightsError, match="cannot load weights"):
        create("resnet34", pretrained=str(path))


def test_packaged_lite0_weights_fill_every_backbone_tensor():
    random_init = create("efficientnet_lite0").model.backbone.state_dict()
    created = create("efficientnet_lite0", pretrained="packaged", frozen=True)
    assert created.mean == created.std == (0.5, 0.5, 0.5)
    loaded = created.model.backbone.state_dict()
    changed = [k for k in loaded if k.endswith("weight") and not torch.equal(loaded[k], random_init[k])]
    assert len(changed) == sum(1 for k in loaded if k.endswith("weight"))
    with pytest.raises(WeightsError, match="only efficientnet_lite0"):
        create("resnet34", pretrained="packaged")


def test_unknown_architecture():
    with pytest.raises(Exception, match="unknown architecture 'vgg'"):
        create("vgg")
    assert {"vanilla_cnn", "alexnet", "resnet34", "efficientnet_b0", "efficientnet_lite0"} <= set(list_architectures())


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_is_registered_and_its_grad_cam_layer_resolves(name):
    arch = get_architecture(name)
    assert arch.role in ("baseline", "transfer") and arch.title == ARCHITECTURES[name].title
    backbone = create(name, pretrained="none").model.backbone
    layer = backbone.get_submodule(arch.grad_cam_layer)
    assert isinstance(layer, torch.nn.Module) and layer is not backbone


def test_registry_facts_match_the_builders_and_import_without_torch():
    assert list_architectures() == list(ARCHITECTURES)
    check = "import monkeyreport.architectures, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=REPO)


def test_models_command_lists_the_seven_experiments():
    result = CliRunner().invoke(app, ["models", "--config", str(REPO / "configs" / "monkeyreport.toml")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == [
        "vanilla_cnn", "alexnet_frozen", "alexnet_finetuned", "resnet34_frozen",
        "resnet34_finetuned", "efficientnet_b0_frozen", "efficientnet_b0_finetuned"]
    assert "11,918,154" in lines[1]
