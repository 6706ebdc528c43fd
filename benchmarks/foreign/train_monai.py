"""Train a small MONAI network on chest X-ray lungs (Dataset002_ChestXrayLungs), the way a MONAI
user would, and save it as a MONAI bundle in OUT_DIR (default ./monai_chest_bundle).
NETWORK=unet (default: UNet 16-128, 2 res units) or NETWORK=swinunetr (2D SwinUNETR, feature_size 12: the
CNN + Transformer hybrid).  No edgeseg code is used.
Run:  a venv with torch==2.13.0 monai==1.6.1 (no edgeseg), then python train_monai.py
"""
import json
import os
import random
import time

import monai
import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import SwinUNETR, UNet
from monai.networks.utils import one_hot
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    RandFlipd,
    Resized,
    ScaleIntensityRanged,
)

TIME_LIMIT_S = float(os.environ.get("TIME_LIMIT_S", 8 * 60 - 15))  # training loop <= 8 minutes
DATA = os.path.join(os.environ.get("EDGESEG_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets")),
                    "Dataset002_ChestXrayLungs")
OUT = os.environ.get("OUT_DIR", os.path.join(os.getcwd(), "monai_chest_bundle"))
SEED = 0

torch.set_num_threads(2)
monai.utils.set_determinism(seed=SEED)
random.seed(SEED)

splits = json.load(open(os.path.join(DATA, "splits.json")))


def items(ids):
    return [
        {"image": os.path.join(DATA, "imagesTr", f"{c}_0000.png"),
         "label": os.path.join(DATA, "labelsTr", f"{c}.png"), "id": c}
        for c in ids
    ]


train_items, val_items = items(splits["train"]), items(splits["val"])
print(f"train {len(train_items)} val {len(val_items)}")

# deterministic part (cached once), then random flips
base = [
    LoadImaged(keys=["image", "label"], image_only=True),
    EnsureChannelFirstd(keys=["image", "label"]),
    Resized(keys=["image", "label"], spatial_size=(128, 128), mode=("bilinear", "nearest")),
    ScaleIntensityRanged(keys="image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True),
    EnsureTyped(keys=["image", "label"], track_meta=False),
]
aug = [
    RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
    RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
]
train_ds = CacheDataset(train_items, transform=Compose(base + aug), cache_rate=1.0, num_workers=0,
                        progress=False)
train_loader = DataLoader(train_ds, batch_size=16, shuffle=True, num_workers=0, drop_last=False)

NETWORKS = {
    "unet": (UNet, {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [16, 32, 64, 128],
                    "strides": [2, 2, 2], "num_res_units": 2}),
    "swinunetr": (SwinUNETR, {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "feature_size": 12}),
}
NETWORK = os.environ.get("NETWORK", "unet")
network_class, network_kwargs = NETWORKS[NETWORK]
model = network_class(**network_kwargs)
loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
print("params", sum(p.numel() for p in model.parameters()))

t0 = time.time()
step = epoch = 0
last = 0.0
stop = False
while not stop:
    model.train()
    ep_loss, nb = 0.0, 0
    for batch in train_loader:
        ts = time.time()
        if ts - t0 + last > TIME_LIMIT_S:
            stop = True
            break
        x, y = batch["image"], batch["label"]
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        step += 1
        nb += 1
        ep_loss += loss.item()
        last = time.time() - ts
    if nb:
        epoch += 1
        print(f"epoch {epoch} steps {step} loss {ep_loss / nb:.4f} t {time.time() - t0:.0f}s", flush=True)
train_s = time.time() - t0
print(f"training done: {epoch} epochs (last may be partial), {step} steps, {train_s:.1f}s")

# ---------------- save as a MONAI bundle ----------------
os.makedirs(os.path.join(OUT, "models"), exist_ok=True)
os.makedirs(os.path.join(OUT, "configs"), exist_ok=True)
torch.save(model.state_dict(), os.path.join(OUT, "models", "model.pt"))

inference = {
    "network_def": {"_target_": network_class.__name__, **network_kwargs},
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Resized", "keys": "image", "spatial_size": [128, 128], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255,
         "b_min": 0.0, "b_max": 1.0, "clip": True},
    ]},
    "inferer": {"_target_": "SimpleInferer"},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]},
}
json.dump(inference, open(os.path.join(OUT, "configs", "inference.json"), "w"), indent=2)

metadata = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.1.0",
    "changelog": {"0.1.0": "initial small lung-segmentation UNet trained from scratch on CPU"},
    "monai_version": monai.__version__,
    "pytorch_version": torch.__version__.split("+")[0],
    "numpy_version": np.__version__,
    "required_packages_version": {},
    "name": f"Chest X-ray lung segmentation (small {network_class.__name__})",
    "task": "Binary lung segmentation on 2D chest X-rays",
    "description": f"MONAI {network_class.__name__} {network_kwargs}, trained from scratch for "
                   f"{TIME_LIMIT_S / 60:.0f} min on CPU "
                   "at 128x128 on the Montgomery+Shenzhen lung masks (Dataset002_ChestXrayLungs train split).",
    "authors": "edgeseg foreign-model fixture",
    "copyright": "n/a",
    "data_source": "Montgomery County (MCUCXR) and Shenzhen (CHNCXR) chest X-ray sets with lung masks",
    "data_type": "png",
    "image_classes": "single-channel grayscale chest X-ray, intensity 0..255 scaled to 0..1",
    "label_classes": "0 background, 1 lung (both lungs)",
    "pred_classes": "0 background, 1 lung",
    "eval_metrics": {},  # filled below
    "intended_use": "Research / testing of model import tooling only; not for clinical use.",
    "license": "Weights were trained on the Montgomery County and Shenzhen chest X-ray sets "
               "(NLM; cite Jaeger et al. 2014, QIMS; Shenzhen masks CC BY-NC-SA 4.0): "
               "research / non-commercial use only.",
    "references": ["Jaeger S. et al., Two public chest X-ray datasets for computer-aided screening "
                   "of pulmonary diseases, QIMS 2014"],
    "network_data_format": {
        "inputs": {"image": {
            "type": "image", "format": "magnitude", "modality": "xray", "num_channels": 1,
            "spatial_shape": [128, 128], "dtype": "float32", "value_range": [0, 1],
            "is_patch_data": False, "channel_def": {"0": "image"}}},
        "outputs": {"pred": {
            "type": "image", "format": "segmentation", "num_channels": 2,
            "spatial_shape": [128, 128], "dtype": "float32", "value_range": [0, 1],
            "is_patch_data": False, "channel_def": {"0": "background", "1": "lung"}}},
    },
}

# ---------------- verify the bundle loads through ConfigParser ----------------
parser = ConfigParser()
parser.read_config(os.path.join(OUT, "configs", "inference.json"))
net = parser.get_parsed_content("network_def")
net.load_state_dict(torch.load(os.path.join(OUT, "models", "model.pt"), map_location="cpu",
                               weights_only=True))
net.eval()
pre = parser.get_parsed_content("preprocessing")
inferer = parser.get_parsed_content("inferer")
post = parser.get_parsed_content("postprocessing")
print("bundle reload OK:", type(net).__name__, type(pre).__name__, type(inferer).__name__)

# ---------------- validation Dice at 512x512 with the bundle's own pipeline ----------------
load_label = Compose([LoadImaged(keys="label", image_only=True), EnsureChannelFirstd(keys="label")])
dice = DiceMetric(include_background=False, reduction="mean")
dice_np_orient = DiceMetric(include_background=False, reduction="mean")
per_case = {}
with torch.no_grad():
    for it in val_items:
        d = pre({"image": it["image"]})
        x = d["image"].unsqueeze(0)                              # (1,1,128,128)
        logits = inferer(x, net)                                 # (1,2,128,128)
        logits512 = F.interpolate(logits.as_tensor() if hasattr(logits, "as_tensor") else logits,
                                  size=(512, 512), mode="bilinear", align_corners=False)
        pred = post({"pred": logits512[0]})["pred"]              # (1,512,512) argmax
        lab = load_label({"label": it["label"]})["label"]        # (1,512,512), MONAI orientation
        p1 = one_hot(torch.as_tensor(pred)[None].long(), 2)
        l1 = one_hot(torch.as_tensor(lab)[None].long(), 2)
        per_case[it["id"]] = float(dice(p1, l1).item())
        # Same net fed numpy/PIL-orientation (rows, cols) input = MONAI-orientation transposed.
        logits_t = net(x.as_tensor().transpose(-1, -2) if hasattr(x, "as_tensor") else x.transpose(-1, -2))
        pt = F.interpolate(logits_t, size=(512, 512), mode="bilinear", align_corners=False).argmax(1, keepdim=True)
        dice_np_orient(one_hot(pt, 2), one_hot(torch.as_tensor(lab)[None].long().transpose(-1, -2), 2))
val_dice = float(dice.aggregate().item())
val_dice_np = float(dice_np_orient.aggregate().item())
print(f"VAL lung Dice @512 (MONAI orientation, bundle pipeline): {val_dice:.4f} over {len(per_case)} cases")
print(f"VAL lung Dice @512 if fed PIL/numpy (rows,cols) orientation instead: {val_dice_np:.4f}")

metadata["eval_metrics"] = {"val_mean_dice_lung_512": round(val_dice, 4)}
json.dump(metadata, open(os.path.join(OUT, "configs", "metadata.json"), "w"), indent=2)
json.dump({"train_seconds": round(train_s, 1), "epochs": epoch, "steps": step,
           "val_mean_dice_lung_512": val_dice, "val_dice_if_numpy_orientation": val_dice_np,
           "per_case": per_case},
          open(os.path.join(os.path.dirname(OUT), os.path.basename(OUT) + "_results.json"), "w"), indent=2)
print("model.pt bytes", os.path.getsize(os.path.join(OUT, "models", "model.pt")))
