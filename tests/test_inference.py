"""Sliding-window inference for 3D models (Gaussian blending)."""
import numpy as np


def test_sliding_window_covers_the_volume_and_blends_exactly():
    from edgeseg.inference import gaussian_importance, sliding_window_logits

    rng = np.random.default_rng(0)
    volume = rng.standard_normal((2, 20, 13, 9)).astype(np.float32)
    pointwise = lambda batch: np.concatenate([batch[:, :1] * 2, batch[:, 1:] - 1], axis=1)  # noqa: E731
    out = sliding_window_logits(pointwise, volume, (8, 8, 8), overlap=0.5, batch_size=3)
    assert out.shape == (2, 20, 13, 9)
    np.testing.assert_allclose(out, pointwise(volume[None])[0], atol=1e-5)  # every voxel covered, weights normalised
    small = sliding_window_logits(pointwise, volume[:, :4, :4, :4], (8, 8, 8))  # padded up, cropped back
    np.testing.assert_allclose(small, pointwise(volume[None, :, :4, :4, :4])[0], atol=1e-5)
    weight = gaussian_importance((8, 8, 8))
    assert weight.max() == 1.0 and weight.min() > 0 and weight[4, 4, 4] > weight[0, 0, 0]


def test_3d_model_on_a_larger_volume_uses_the_sliding_window():
    from edgeseg.data import PreprocessSpec
    from edgeseg.inference import predict_logits

    spec = PreprocessSpec((16, 16, 16), ["t1"], resize="pad")
    image = np.random.default_rng(2).standard_normal((1, 30, 24, 12)).astype(np.float32)
    seen = []

    def predict(batch):
        seen.append(batch.shape)
        return np.concatenate([-batch, batch], axis=1)

    logits = predict_logits(predict, image, spec, model_dims=3)
    assert logits.shape == (2, 30, 24, 12)
    assert all(shape[2:] == (16, 16, 16) for shape in seen) and sum(s[0] for s in seen) > 1
    np.testing.assert_allclose(logits[1], spec.normalize(image)[0], atol=1e-5)
