"""The Python API: round trips on awkward sizes and modes, quality behaviour, settings and model checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import bare_profile, photo_crop, sane_psnr, srgb_profile, synthetic
from PIL import Image

import yotocodec
from yotocodec.codec import embedding, latent_shapes
from yotocodec.container import Header, pack, unpack
from yotocodec.metrics import psnr


def rgb_psnr(a: Image.Image, b: Image.Image) -> float:
    return psnr(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (500, 333), (64, 200), (200, 64), (1, 70)])
def test_round_trip_sizes(model, size):
    image = photo_crop(*size)
    decoded = yotocodec.decode(yotocodec.encode(image, 90, model=model), model=model)
    assert decoded.size == image.size
    assert decoded.mode == "RGB"
    if min(size) >= 17:  # a 1-pixel image has no structure worth scoring
        assert rgb_psnr(image, decoded) > sane_psnr(np.asarray(image.convert("RGB")))


def test_padding_to_the_transform_stride_only(model):
    """Format 3 pads an image to a multiple of 16, not 64: a 70×45 image codes a 5×3 latent (version 2: 8×4), and
    the file is smaller than that of the same image padded to 128×64 beforehand."""
    image = photo_crop(70, 45)
    data = yotocodec.encode(image, 50, model=model)
    header, strings = unpack(data)
    assert header.version == 3 and latent_shapes(model, header) == ((3, 5), (1, 2))
    y_hat, symbols = model.decode_latent(strings[:2], latent_shapes(model, header), embedding(model, header.lmbda_code))
    assert y_hat.shape[-2:] == symbols["y"].shape[-2:] == (3, 5) and symbols["z"].shape[-2:] == (1, 2)
    padded = Image.fromarray(np.pad(np.asarray(image), ((9, 10), (29, 29), (0, 0)), mode="edge"))  # as version 2
    assert len(strings[0]) < len(unpack(yotocodec.encode(padded, 50, model=model))[1][0])
    assert yotocodec.decode(data, model=model).size == (70, 45)
    old = replace(header, version=2)  # the same size in a version-2 file: the latent geometry it was written with
    assert latent_shapes(model, old) == ((4, 8), (1, 2))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_round_trip_modes(model, mode):
    image = synthetic(96, 80, mode)
    decoded = yotocodec.decode(yotocodec.encode(image, 80, model=model), model=model)
    assert decoded.mode == mode
    assert decoded.size == image.size
    if "A" in mode:  # alpha is stored losslessly
        assert np.array_equal(np.asarray(decoded.getchannel("A")), np.asarray(image.getchannel("A")))


def test_palette_and_cmyk_become_rgb(model):
    palette = photo_crop(64, 48).quantize(64)
    cmyk = photo_crop(64, 48).convert("CMYK")
    for image in (palette, cmyk):
        decoded = yotocodec.decode(yotocodec.encode(image, 80, model=model), model=model)
        assert (decoded.mode, decoded.size) == ("RGB", (64, 48))
        assert rgb_psnr(image, decoded) > sane_psnr(np.asarray(image.convert("RGB")))


def test_palette_with_transparency_keeps_alpha(model):
    image = synthetic(40, 30).quantize(16)
    image.info["transparency"] = 0
    decoded = yotocodec.decode(yotocodec.encode(image, 80, model=model), model=model)
    assert decoded.mode == "RGBA"
    assert np.array_equal(np.asarray(decoded.getchannel("A")), np.asarray(image.convert("RGBA").getchannel("A")))


def test_sixteen_bit_greyscale_is_rescaled_not_clipped(model):
    grey16 = (np.asarray(photo_crop(64, 64).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    image = Image.fromarray(grey16)
    assert image.mode.startswith("I;16")
    decoded = yotocodec.decode(yotocodec.encode(image, 90, model=model), model=model)
    assert decoded.mode == "L"
    expected = (grey16 // 257).astype(np.uint8)
    assert psnr(np.asarray(decoded), expected) > sane_psnr(expected)


def test_exif_orientation_is_applied(model, tmp_path):
    image = synthetic(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    decoded = yotocodec.decode(yotocodec.encode(Image.open(path), 80, model=model), model=model)
    assert decoded.size == (40, 60)


def with_profile(image: Image.Image, profile: bytes | None) -> Image.Image:
    image.info["icc_profile"] = profile
    return image


def test_icc_profile_travels_with_the_image(model):
    profile = srgb_profile()
    image = with_profile(photo_crop(64, 48), profile)
    data = yotocodec.encode(image, 60, model=model)
    plain = yotocodec.encode(with_profile(photo_crop(64, 48), None), 60, model=model)
    assert len(data) == len(plain) + len(profile) + 2  # the profile and its 2-byte length, nothing else
    assert yotocodec.inspect(data, model=model).metadata == yotocodec.Metadata(icc_profile=profile)
    decoded = yotocodec.decode(data, model=model)
    assert decoded.info["icc_profile"] == profile
    assert yotocodec.inspect(yotocodec.encode(photo_crop(64, 48), 60, model=model)).metadata == yotocodec.Metadata()


@pytest.mark.parametrize(
    ("mode", "profile", "kept"),
    [
        ("L", bare_profile(b"GRAY"), True),
        ("LA", bare_profile(b"GRAY"), True),
        ("RGBA", bare_profile(b"RGB "), True),
        ("L", bare_profile(b"RGB "), False),  # describes colours the pixels do not have
        ("RGB", bare_profile(b"GRAY"), False),
        ("CMYK", bare_profile(b"CMYK"), False),  # the pixels are converted to RGB
        ("RGB", b"not an ICC profile", False),
        ("RGB", bare_profile(b"RGB ")[:-1], False),  # shorter than its header says
    ],
)
def test_only_a_profile_that_matches_the_coded_pixels_is_kept(model, mode, profile, kept):
    decoded = yotocodec.decode(yotocodec.encode(with_profile(synthetic(40, 24, mode), profile), 50, model=model))
    assert decoded.info.get("icc_profile") == (profile if kept else None)


def exif_jpeg(tmp_path, orientation: int) -> Image.Image:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Yoto Camera Co."  # Make
    exif[0x0132] = "2026:12:02 08:00:00"  # DateTime
    path = tmp_path / "photo.jpg"
    photo_crop(60, 40).save(path, exif=exif, quality=95)
    return Image.open(path)


def test_exif_travels_with_its_orientation_applied_once(model, tmp_path):
    image = exif_jpeg(tmp_path, orientation=6)
    data = yotocodec.encode(image, 60, model=model)
    decoded = yotocodec.decode(data, model=model)
    assert decoded.size == (40, 60)
    tags = dict(decoded.getexif())
    assert tags[0x010F] == "Yoto Camera Co." and tags[0x0132] == "2026:12:02 08:00:00"
    assert 0x0112 not in tags  # applied to the pixels, so a viewer must not rotate them again
    assert yotocodec.inspect(data).metadata.exif == decoded.info["exif"]


def test_exif_without_its_prefix_is_stored_in_the_usual_form(model):
    """WebP and some PNG writers give the bare TIFF structure; JPEG and Pillow spell it with ``Exif\\0\\0``."""
    exif = Image.Exif()
    exif[0x010F] = "Yoto Camera Co."
    image = photo_crop(32, 32)
    image.info["exif"] = exif.tobytes()[6:]
    decoded = yotocodec.decode(yotocodec.encode(image, 50, model=model), model=model)
    assert decoded.info["exif"] == exif.tobytes()


def test_without_exif_keeps_the_orientation_and_drops_the_rest(model, tmp_path):
    image = exif_jpeg(tmp_path, orientation=6)
    decoded = yotocodec.decode(yotocodec.encode(yotocodec.without_exif(image), 60, model=model), model=model)
    assert decoded.size == (40, 60) and "exif" not in decoded.info
    assert "exif" in image.info  # the caller's image is left as it was


def test_damaged_or_missing_metadata_is_refused(model):
    image = with_profile(photo_crop(32, 32), srgb_profile())
    image.info["exif"] = Image.Exif().tobytes()
    header, strings = unpack(yotocodec.encode(image, 50, model=model))
    assert (header.has_icc_profile, header.has_exif, len(strings)) == (True, True, 4)
    for position, what in ((2, "ICC profile is not a valid profile"), (3, "EXIF block is not a valid EXIF block")):
        damaged = list(strings)
        damaged[position] = b"\0" * len(strings[position])
        for call in (yotocodec.decode, yotocodec.inspect):  # a consistent CRC: only the stored bytes are wrong
            with pytest.raises(yotocodec.YotoError, match=f"corrupt: the stored {what}"):
                call(pack(header, damaged), model=model)
    with pytest.raises(yotocodec.YotoError, match="invalid file: 3 strings for a RGB image, expected 4"):
        yotocodec.decode(pack(header, strings[:3]), model=model)
    plain = Header(header.model_id, header.lmbda_code, 32, 32, "RGB")
    with pytest.raises(yotocodec.YotoError, match="invalid file: 4 strings for a RGB image, expected 2"):
        yotocodec.decode(pack(plain, strings), model=model)


QUALITIES = [0, 15, 30, 45, 60, 75, 90, 100]


def sweep(model, photo) -> tuple[list[int], list[float]]:
    sizes, psnrs = [], []
    for q in QUALITIES:
        data = yotocodec.encode(photo, q, model=model)
        sizes.append(len(data))
        psnrs.append(rgb_psnr(photo, yotocodec.decode(data, model=model)))
    return sizes, psnrs


def test_quality_raises_rate_and_psnr_on_a_photo(model, photo):
    sizes, psnrs = sweep(model, photo)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert psnrs[-1] > psnrs[0] + 1, psnrs


def test_psnr_is_monotonic_in_quality_on_a_photo(model, photo):
    _, psnrs = sweep(model, photo)
    assert psnrs == sorted(psnrs), psnrs


def test_encoding_is_deterministic(model, photo):
    assert yotocodec.encode(photo, 42.5, model=model) == yotocodec.encode(photo, 42.5, model=model)


def test_quality_and_lambda_select_the_same_code(model, photo):
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    assert yotocodec.encode(photo, 0, model=model) == yotocodec.encode(photo, lmbda=lo, model=model)
    assert yotocodec.encode(photo, 100, model=model) == yotocodec.encode(photo, lmbda=hi, model=model)


def test_info_reports_quality_lambda_and_bpp(model, photo):
    data = yotocodec.encode(photo, 60, model=model)
    info = yotocodec.inspect(data, model=model)
    assert (info.width, info.height, info.mode, info.model_id) == (256, 256, "RGB", model.model_id)
    assert info.quality == pytest.approx(60, abs=0.001)
    assert model.config.lmbda_min < info.lmbda < model.config.lmbda_max
    assert info.bpp == pytest.approx(len(data) * 8 / 256**2)
    assert info.format_version == 3


@pytest.mark.parametrize("quality", [-1, 100.5, float("nan")])
def test_quality_out_of_range(model, quality):
    with pytest.raises(yotocodec.YotoError, match="quality must be between 0 and 100"):
        yotocodec.encode(synthetic(8, 8), quality, model=model)


def test_lambda_outside_trained_range(model):
    with pytest.raises(yotocodec.YotoError, match="outside this model's trained range"):
        yotocodec.encode(synthetic(8, 8), lmbda=model.config.lmbda_max * 2, model=model)


def test_file_from_another_model_names_it(model, other_model_path):
    other = yotocodec.load_model(other_model_path)
    data = yotocodec.encode(synthetic(32, 32), 50, model=other)
    with pytest.raises(yotocodec.YotoError, match=f"written by model {other.model_id}"):
        yotocodec.decode(data, model=model)


def test_errors_are_value_errors():
    assert issubclass(yotocodec.YotoError, ValueError)


def test_effort_lowers_the_real_rate_distortion_cost(model, photo):
    """Latent refinement never makes the measured λ·255²·MSE + bpp worse, and its files decode as usual."""
    from yotocodec.codec import code_for, lambda_from_code

    image = photo.crop((64, 64, 192, 192))
    original = np.asarray(image, dtype=np.float64)
    lmbda = lambda_from_code(model, code_for(model, 50))

    def cost(data: bytes) -> float:
        decoded = np.asarray(yotocodec.decode(data, model=model), dtype=np.float64)
        return lmbda * np.mean((decoded - original) ** 2) + len(data) * 8 / original.shape[0] / original.shape[1]

    plain, refined = yotocodec.encode(image, 50, model=model), yotocodec.encode(image, 50, model=model, effort=1)
    assert cost(refined) <= cost(plain) * 1.001
    assert yotocodec.inspect(refined, model=model).quality == yotocodec.inspect(plain, model=model).quality


def test_more_effort_is_never_worse(model, photo):
    """Each effort level continues the previous one's steps and keeps the best latent by the real quantised loss."""
    import torch

    from yotocodec.codec import code_for, embedding, lambda_from_code
    from yotocodec.refine import _float32_twin, rd_loss, refine_latent
    from yotocodec.tiling import analysis

    code = code_for(model, 30)
    emb, lmbda = embedding(model, code), lambda_from_code(model, code)

    def real_losses(pixels: np.ndarray) -> list[float]:
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255
        y = analysis(model, pixels, emb)
        losses = []
        for effort in (0, 1, 2):
            torch.manual_seed(0)  # the same noise draws, so a higher level retraces the lower one's steps
            latent = refine_latent(model, x, y, emb, lmbda, effort)
            with torch.no_grad():
                loss = rd_loss(_float32_twin(model), x.float(), latent.float(), emb.float(), lmbda, 128 * 128, False)
            losses.append(float(loss))
        return losses

    # Never worse on any image; on some the analysis transform's latent is already the best the steps find.
    crops = [real_losses(np.array(photo.crop(box))) for box in ((64, 64, 192, 192), (0, 0, 128, 128))]
    assert all(losses[2] <= losses[1] <= losses[0] for losses in crops)
    assert any(losses[1] < losses[0] for losses in crops)


def test_effort_out_of_range(model):
    with pytest.raises(yotocodec.YotoError, match="effort must be an integer from 0 to 3"):
        yotocodec.encode(synthetic(8, 8), 50, model=model, effort=4)
