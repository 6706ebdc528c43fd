"""Train a small segmentation_models_pytorch Unet on chest X-ray lungs (Dataset002_ChestXrayLungs),
the way an smp user would, and save it with model.save_pretrained() in OUT_DIR (default ./smp_chest)
(+ plain state dict in OUT_DIR_state.pt).  No edgeseg code is used.
Run:  a venv with torch==2.13.0 segmentation-models-pytorch==0.6.0 (no edgeseg), then HF_HUB_OFFLINE=1 python train_smp.py
"""
import json
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network (no weights, no configs)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
# isort: off
import torchvision_cpu  # noqa: F401,E402  (CPU torch + PyPI CUDA torchvision here: see its docstring)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import segmentation_models_pytorch as smp  # noqa: E402
# isort: on

TIME_LIMIT_S = float(os.environ.get("TIME_LIMIT_S", 8 * 60 - 15))  # training loop <= 8 minutes
DATA = os.path.join(os.environ.get("EDGESEG_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets")),
                    "Dataset002_ChestXrayLungs")
OUT = os.environ.get("OUT_DIR", os.path.join(os.getcwd(), "smp_chest"))
STATE = OUT + "_state.pt"
SEED = 0
# resnet18 with encoder_depth=4 is 46 MB (and smp 0.6.0 keeps the unused layer3/layer4 weights even
# at encoder_depth=3, still 45 MB), so use timm's MobileNetV3-small through smp's timm-universal
# encoder ("tu-" spelling; "timm-mobilenetv3_small_100" is a deprecated alias of the same thing).
ENCODER = os.environ.get("ENCODER", "tu-mobilenetv3_small_100")

torch.set_num_threads(2)
torch.manual_seed(SEED)
random.seed(SEED)
np.random.seed(SEED)

try:
    pp = smp.encoders.get_preprocessing_params(ENCODER, pretrained="imagenet")
    MEAN, STD, PP_SRC = pp["mean"], pp["std"], "smp.encoders.get_preprocessing_params"
except Exception as e:  # smp 0.6.0 fetches config.json from the HF hub for non-"tu-" encoders
    print("get_preprocessing_params failed:", type(e).__name__, str(e)[:120])
    MEAN, STD, PP_SRC = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], "fallback imagenet constants"
print("encoder", ENCODER, "mean", MEAN, "std", STD, "from", PP_SRC)
MEAN_T = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
STD_T = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)

splits = json.load(open(os.path.join(DATA, "splits.json")))


def load(c):
    img = np.array(Image.open(os.path.join(DATA, "imagesTr", f"{c}_0000.png")).convert("L"))
    lab = np.array(Image.open(os.path.join(DATA, "labelsTr", f"{c}.png")))
    return img, lab


def preprocess(img_u8):
    """uint8 (H,W) gray -> float (1,3,128,128): repeat to 3ch, /255, imagenet normalize."""
    x = torch.from_numpy(img_u8).float()[None, None]                       # 1,1,H,W
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    x = x.repeat(1, 3, 1, 1) / 255.0
    return (x - MEAN_T) / STD_T


def down_label(lab_u8):
    y = torch.from_numpy(lab_u8).float()[None, None]
    return F.interpolate(y, size=(128, 128), mode="nearest").long()[:, 0]  # 1,128,128


train_ids, val_ids = splits["train"], splits["val"]
X, Y = [], []
for c in train_ids:
    img, lab = load(c)
    X.append(preprocess(img))
    Y.append(down_label(lab))
X, Y = torch.cat(X), torch.cat(Y)
print(f"train {len(train_ids)} val {len(val_ids)}  X {tuple(X.shape)} Y {tuple(Y.shape)}")

model = smp.Unet(encoder_name=ENCODER, encoder_weights=None, in_channels=3, classes=2,
                 encoder_depth=4, decoder_channels=(64, 32, 16, 8))
# Dice + CE as an smp user writes it (smp's counterpart of MONAI DiceCELoss(to_onehot_y, softmax)):
# smp.losses.DiceLoss("multiclass") applies softmax to the logits and one-hots the integer target.
# Note: smp's Dice is aggregated over the whole batch per class (MONAI's is per sample, then mean).
dice_loss = smp.losses.DiceLoss(mode="multiclass", from_logits=True)
ce_loss = torch.nn.CrossEntropyLoss()


def dice_ce(logits, y):
    return dice_loss(logits, y) + ce_loss(logits, y)


opt = torch.optim.Adam(model.parameters(), lr=1e-3)
print("params", sum(p.numel() for p in model.parameters()))

n = len(X)
t0 = time.time()
step = epoch = 0
last = 0.0
stop = False
while not stop:
    model.train()
    perm = torch.randperm(n)
    ep_loss, nb = 0.0, 0
    for i in range(0, n, 16):
        ts = time.time()
        if ts - t0 + last > TIME_LIMIT_S:
            stop = True
            break
        idx = perm[i:i + 16]
        x, y = X[idx].clone(), Y[idx].clone()
        # simple flips augmentation (per sample)
        for j in range(len(idx)):
            if random.random() < 0.5:
                x[j], y[j] = x[j].flip(-1), y[j].flip(-1)
            if random.random() < 0.5:
                x[j], y[j] = x[j].flip(-2), y[j].flip(-2)
        opt.zero_grad()
        loss = dice_ce(model(x), y)
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

model.eval()
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT)
torch.save(model.state_dict(), STATE)

# reload with no network access and check equality
reloaded = smp.from_pretrained(OUT)
reloaded.eval()
sd_r = torch.load(STATE, map_location="cpu", weights_only=True)
probe = X[:2]
with torch.no_grad():
    diff = (reloaded(probe) - model(probe)).abs().max().item()
print("from_pretrained reload OK:", type(reloaded).__name__, "max |diff|", diff,
      "state-dict keys", len(sd_r))
assert diff < 1e-5

# validation Dice (lung) at 512x512: logits -> bilinear 512 -> argmax
per_case = {}
with torch.no_grad():
    for c in val_ids:
        img, lab = load(c)
        logits = reloaded(preprocess(img))
        pred = F.interpolate(logits, size=(512, 512), mode="bilinear", align_corners=False).argmax(1)[0]
        gt = torch.from_numpy(lab).long()
        inter = ((pred == 1) & (gt == 1)).sum().item()
        s = (pred == 1).sum().item() + (gt == 1).sum().item()
        per_case[c] = 2.0 * inter / s if s else 1.0
val_dice = float(np.mean(list(per_case.values())))
print(f"VAL lung Dice @512: {val_dice:.4f} over {len(per_case)} cases")

json.dump({"encoder": ENCODER, "mean": MEAN, "std": STD, "mean_std_source": PP_SRC,
           "train_seconds": round(train_s, 1), "epochs": epoch, "steps": step,
           "val_mean_dice_lung_512": val_dice, "per_case": per_case},
          open(OUT + "_results.json", "w"), indent=2)
for f in sorted(os.listdir(OUT)):
    print(f, os.path.getsize(os.path.join(OUT, f)))
print("state dict bytes", os.path.getsize(STATE))
