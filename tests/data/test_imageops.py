"""OpenCV image ops: parity with cv2 called directly, what each op means, parameter checks, files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dlforge.cli.image import app
from dlforge.data.imageops import OPS, apply_ops, parse_op, read_image, validate_ops, write_image
from dlforge.errors import ConfigError, DataError

try:
    import cv2
except ImportError:  # pragma: no cover - a broken environment, not a feature to skip
    pytest.fail("these tests need OpenCV: pip install opencv-python-headless", pytrace=False)


def scene(h: int = 40, w: int = 48, color: bool = True, seed: int = 0) -> np.ndarray:
    """A uint8 test image: a gradient, a bright rectangle, a dark disk and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = (xx * 200 / w + yy * 40 / h).astype(np.float64)
    img[8:20, 10:30] = 230
    img[(yy - 28) ** 2 + (xx - 34) ** 2 < 36] = 20
    img = np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)
    if not color:
        return img
    return np.stack([img, np.roll(img, 3, axis=1), 255 - img], axis=2)


def square(h: int = 32, w: int = 32, top: int = 10, left: int = 8, side: int = 12) -> np.ndarray:
    img = np.zeros((h, w), dtype=np.uint8)
    img[top:top + side, left:left + side] = 255
    return img


# --- parity with OpenCV ----------------------------------------------------------------------------------------


def test_grayscale_is_opencv_rgb2gray_and_keeps_gray_images():
    img = scene()
    np.testing.assert_array_equal(apply_ops(img, [{"op": "grayscale"}]), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    gray = scene(color=False)
    np.testing.assert_array_equal(apply_ops(gray, [{"op": "grayscale"}]), gray)


@pytest.mark.parametrize("interp, flag", [("nearest", cv2.INTER_NEAREST), ("linear", cv2.INTER_LINEAR),
                                          ("area", cv2.INTER_AREA), ("cubic", cv2.INTER_CUBIC),
                                          ("lanczos", cv2.INTER_LANCZOS4)])
def test_resize_matches_opencv_for_each_interpolation(interp, flag):
    img = scene()
    out = apply_ops(img, [{"op": "resize", "size": [20, 30], "interpolation": interp}])
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, cv2.resize(img, (30, 20), interpolation=flag))  # cv2 takes (width, height)
    square_out = apply_ops(img[..., 0], [{"op": "resize", "size": 16, "interpolation": interp}])
    assert square_out.shape == (16, 16)


@pytest.mark.parametrize("ksize, sigma", [(3, 0.0), (5, 1.5), (7, 0.0)])
def test_gaussian_blur_matches_opencv(ksize, sigma):
    img = scene()
    out = apply_ops(img, [{"op": "gaussian_blur", "ksize": ksize, "sigma": sigma}])
    np.testing.assert_array_equal(out, cv2.GaussianBlur(img, (ksize, ksize), sigma))


def test_canny_matches_opencv_with_its_options():
    gray = scene(color=False)
    np.testing.assert_array_equal(apply_ops(gray, [{"op": "canny", "low": 30, "high": 90}]), cv2.Canny(gray, 30, 90))
    out = apply_ops(gray, [{"op": "canny", "low": 100, "high": 200, "aperture": 5, "l2_gradient": True}])
    np.testing.assert_array_equal(out, cv2.Canny(gray, 100, 200, apertureSize=5, L2gradient=True))


def test_threshold_value_otsu_and_inverse_match_opencv():
    gray = scene(color=False)
    ref = cv2.threshold(gray, 100, 255, cv2.THRESH_BINARY)[1]
    np.testing.assert_array_equal(apply_ops(gray, [{"op": "threshold", "value": 100}]), ref)
    ref_inv = cv2.threshold(gray, 100, 200, cv2.THRESH_BINARY_INV)[1]
    out = apply_ops(gray, [{"op": "threshold", "value": 100, "mode": "binary_inv", "max_value": 200}])
    np.testing.assert_array_equal(out, ref_inv)
    ref_otsu = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    np.testing.assert_array_equal(apply_ops(gray, [{"op": "threshold", "value": "otsu"}]), ref_otsu)


def test_equalize_gray_is_equalizehist_and_color_equalizes_luma_only():
    gray = (scene(color=False) // 3 + 60).astype(np.uint8)  # a low-contrast image
    out = apply_ops(gray, [{"op": "equalize"}])
    np.testing.assert_array_equal(out, cv2.equalizeHist(gray))
    assert int(out.max()) - int(out.min()) > int(gray.max()) - int(gray.min())
    img = scene()
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(np.ascontiguousarray(ycc[..., 0]))
    np.testing.assert_array_equal(apply_ops(img, [{"op": "equalize"}]), cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB))


def test_ops_chain_in_order_like_opencv_calls_in_sequence():
    img = scene()
    ops = [{"op": "grayscale"}, {"op": "gaussian_blur", "ksize": 5}, {"op": "canny", "low": 20, "high": 60}]
    ref = cv2.Canny(cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (5, 5), 0), 20, 60)
    np.testing.assert_array_equal(apply_ops(img, ops), ref)
    np.testing.assert_array_equal(apply_ops(img, []), img)


# --- what the ops mean -----------------------------------------------------------------------------------------


def test_canny_of_a_white_square_has_edges_only_on_its_border():
    img = square(top=10, left=8, side=12)
    edges = apply_ops(img, [{"op": "canny", "low": 50, "high": 150}])
    assert set(np.unique(edges)) == {0, 255}
    rows, cols = np.nonzero(edges)
    # every edge pixel is within one pixel of the square's outline; none deep inside or far outside
    top, bottom, left, right = 10, 21, 8, 19
    near_row_edge = (np.minimum(abs(rows - top), abs(rows - bottom)) <= 1) & (cols >= left - 1) & (cols <= right + 1)
    near_col_edge = (np.minimum(abs(cols - left), abs(cols - right)) <= 1) & (rows >= top - 1) & (rows <= bottom + 1)
    assert np.all(near_row_edge | near_col_edge)
    assert edges[top + 3:bottom - 2, left + 3:right - 2].sum() == 0  # the inside is flat
    assert len(rows) >= 4 * 10  # and the outline is there all around


def test_otsu_splits_a_bimodal_image_between_its_modes():
    rng = np.random.default_rng(1)
    truth = rng.random((50, 50)) < 0.4
    img = np.where(truth, rng.normal(190, 10, truth.shape), rng.normal(60, 10, truth.shape))
    img = np.clip(img, 0, 255).astype(np.uint8)
    out = apply_ops(img, [{"op": "threshold", "value": "otsu"}])
    np.testing.assert_array_equal(out == 255, truth)


def test_gaussian_blur_keeps_the_mean_and_lowers_the_variance():
    img = scene(color=False)
    out = apply_ops(img, [{"op": "gaussian_blur", "ksize": 7, "sigma": 2.0}])
    assert abs(float(out.mean()) - float(img.mean())) < 1.0
    assert out.std() < img.std()


def test_threshold_otsu_on_a_color_image_asks_for_grayscale_first():
    with pytest.raises(DataError, match="grayscale"):
        apply_ops(scene(), [{"op": "threshold", "value": "otsu"}])
    assert apply_ops(scene(), [{"op": "grayscale"}, {"op": "threshold", "value": "otsu"}]).ndim == 2


# --- parameter checks ------------------------------------------------------------------------------------------


def test_unknown_op_is_named_with_the_known_ones():
    with pytest.raises(ConfigError) as err:
        validate_ops([{"op": "grayscale"}, {"op": "cany"}], where="data.ops")
    msg = str(err.value)
    assert "data.ops[1].op" in msg and "'cany'" in msg
    assert all(name in msg for name in OPS)


def test_unknown_parameter_is_named_with_the_op_s_parameters():
    with pytest.raises(ConfigError) as err:
        validate_ops([{"op": "canny", "hgih": 100}], where="data.ops")
    msg = str(err.value)
    assert "data.ops[0].hgih" in msg and "low" in msg and "high" in msg and "aperture" in msg


@pytest.mark.parametrize("spec, key", [
    ({"op": "gaussian_blur", "ksize": 4}, "ksize"),
    ({"op": "gaussian_blur", "ksize": 0}, "ksize"),
    ({"op": "canny", "low": "lots"}, "low"),
    ({"op": "canny", "aperture": 4}, "aperture"),
    ({"op": "threshold", "value": "median"}, "value"),
    ({"op": "resize", "size": [0, 3]}, "size"),
    ({"op": "resize", "size": 8, "interpolation": "bilinear"}, "interpolation"),
    ({"op": "resize"}, "size"),
])
def test_bad_parameter_values_name_the_parameter(spec, key):
    with pytest.raises(ConfigError, match=rf"ops\[0\]\.{key}"):
        validate_ops([spec])


def test_malformed_op_lists_are_config_errors():
    with pytest.raises(ConfigError, match="op"):
        validate_ops([{"ksize": 3}])
    with pytest.raises(ConfigError, match="list"):
        validate_ops({"op": "canny"})  # type: ignore[arg-type]


def test_images_of_other_shapes_or_types_are_refused():
    with pytest.raises(DataError, match="uint8"):
        apply_ops(scene().astype(np.float32), [{"op": "grayscale"}])
    with pytest.raises(DataError, match="shape"):
        apply_ops(np.zeros((4, 4, 2), dtype=np.uint8), [])


def test_parse_op_reads_names_and_yaml_values():
    assert parse_op("canny") == {"op": "canny"}
    assert parse_op("gaussian_blur:ksize=5,sigma=1.5") == {"op": "gaussian_blur", "ksize": 5, "sigma": 1.5}
    assert parse_op("resize:size=[32,48],interpolation=cubic") == {"op": "resize", "size": [32, 48],
                                                                  "interpolation": "cubic"}
    assert parse_op("threshold:value=otsu,mode=binary_inv") == {"op": "threshold", "value": "otsu",
                                                               "mode": "binary_inv"}
    assert parse_op("canny:l2_gradient=true")["l2_gradient"] is True
    # a first value without a key is the op's first parameter, as `dlforge image ops --help` lists them (issue 13,
    # defect 19): threshold:otsu
    assert parse_op("threshold:otsu") == {"op": "threshold", "value": "otsu"}
    assert parse_op("resize:[32,48],interpolation=cubic") == {"op": "resize", "size": [32, 48],
                                                             "interpolation": "cubic"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_op("canny:50,150")  # only the first value goes without its key
    with pytest.raises(ConfigError, match="key=value"):
        parse_op("grayscale:1")  # an op without parameters


# --- files and the CLI -----------------------------------------------------------------------------------------


def test_write_and_read_keep_rgb_order_and_gray_images(tmp_path):
    img = scene()
    path = write_image(tmp_path / "scene.png", img)
    np.testing.assert_array_equal(read_image(path), img)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], img)  # on disk: OpenCV's BGR of our RGB
    gray = scene(color=False)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "gray.bmp", gray)), gray)
    with pytest.raises(DataError, match="extension"):
        write_image(tmp_path / "scene.nope", img)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")


def test_cli_ops_writes_the_ops_result_and_a_summary(tmp_path):
    src = write_image(tmp_path / "in.png", scene())
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["ops", str(src), str(out), "--op", "grayscale",
                                      "--op", "gaussian_blur:ksize=5", "--op", "canny:low=20,high=60"])
    assert result.exit_code == 0, result.output
    expected = apply_ops(scene(), [{"op": "grayscale"}, {"op": "gaussian_blur", "ksize": 5},
                                   {"op": "canny", "low": 20, "high": 60}])
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), expected)
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "40x48x3" in line and "40x48" in line and "canny" in line


def test_cli_ops_json_reports_shapes_and_ops(tmp_path):
    src = write_image(tmp_path / "in.png", scene())
    result = CliRunner().invoke(app, ["ops", str(src), str(tmp_path / "small.jpg"), "--op", "resize:size=[10,12]",
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["input_shape"] == [40, 48, 3] and summary["output_shape"] == [10, 12, 3]
    assert summary["ops"] == [{"op": "resize", "size": [10, 12]}]
    assert cv2.imread(str(tmp_path / "small.jpg")).shape == (10, 12, 3)


def test_cli_ops_errors_name_the_missing_file_or_the_bad_op(tmp_path):
    result = CliRunner().invoke(app, ["ops", str(tmp_path / "missing.png"), str(tmp_path / "out.png")])
    assert isinstance(result.exception, DataError) and "missing.png" in str(result.exception)
    src = write_image(tmp_path / "in.png", scene())
    result = CliRunner().invoke(app, ["ops", str(src), str(tmp_path / "out.png"), "--op", "blur"])
    assert isinstance(result.exception, ConfigError) and "'blur'" in str(result.exception)
    assert not (tmp_path / "out.png").exists()


def test_cli_ops_takes_threshold_otsu_as_its_help_lists_it(tmp_path):
    """`--op threshold:otsu` failed though `dlforge image ops --help` listed it (issue 13, defect 19)."""
    src = write_image(tmp_path / "in.png", scene())
    result = CliRunner().invoke(app, ["ops", str(src), str(tmp_path / "out.png"), "--op", "grayscale", "--op",
                                      "threshold:otsu"])
    assert result.exit_code == 0, result.output
    expected = apply_ops(scene(), [{"op": "grayscale"}, {"op": "threshold", "value": "otsu"}])
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), expected)
    assert "threshold:otsu" in " ".join(CliRunner().invoke(app, ["ops", "--help"]).output.split())
