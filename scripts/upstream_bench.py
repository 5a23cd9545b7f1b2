#!/usr/bin/env python3
"""Throughput of the upstream Silent-Face-Anti-Spoofing pipeline on given image files.

The recipe facegate's large-photo figures are compared with: upstream's own `AntiSpoofPredict`
(Caffe RetinaFace through OpenCV's dnn, then both MiniFASNets) and `CropImage`, on torch's CPU
device with 2 threads, in-process (no HTTP). Each network is loaded once before measuring
(upstream's `predict` reloads the weights on every call, which would measure file loading).
Per image: decode from bytes in memory (`cv2.imdecode`, EXIF applied as `cv2.imread` does),
`get_bbox`, the two crops and the two predictions.

Needs a checkout of https://github.com/minivision-ai/Silent-Face-Anti-Spoofing (its weights are
in the repository) and `pip install torch opencv-python-headless numpy pillow`; nothing of it is part
of facegate.

    python3 scripts/upstream_bench.py --repo PATH/Silent-Face-Anti-Spoofing --seconds 10 A.jpg B.jpg
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="Silent-Face-Anti-Spoofing checkout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per file")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    os.chdir(args.repo)  # upstream loads its detector by relative path
    sys.path.insert(0, args.repo)
    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from src.anti_spoof_predict import AntiSpoofPredict
    from src.generate_patches import CropImage
    from src.utility import parse_model_name

    model_dir = "./resources/anti_spoof_models"
    predictor = AntiSpoofPredict(0)
    cropper = CropImage()
    nets = []
    for name in sorted(os.listdir(model_dir)):
        h, w, _, scale = parse_model_name(name)
        predictor._load_model(os.path.join(model_dir, name))
        predictor.model.eval()
        nets.append((predictor.model, h, w, scale))

    def analyse(data):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        bbox = predictor.get_bbox(img)
        pred = np.zeros((1, 3))
        for model, h, w, scale in nets:
            crop = cropper.crop(img, bbox, scale, w, h, scale is not None)
            x = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32)).unsqueeze(0)
            with torch.no_grad():
                pred += torch.nn.functional.softmax(model(x), dim=1).numpy()
        return float(pred[0][1] / 2)

    for path in args.files:
        with open(path, "rb") as f:
            data = f.read()
        for _ in range(3):
            score = analyse(data)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            analyse(data)
            n += 1
        dt = time.perf_counter() - t0
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        print(json.dumps({
            "file": path,
            "width": img.shape[1],
            "height": img.shape[0],
            "images": n,
            "images_per_s": n / dt,
            "ms_per_image": dt * 1e3 / n,
            "live_score": score,
            "threads": args.threads,
        }))


if __name__ == "__main__":
    main()
