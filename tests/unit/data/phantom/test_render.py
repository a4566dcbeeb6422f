"""Label <-> pixel: what the labels and meta say is measurable in the rendered image.

Most checks render a study twice, with and without one finding: the other random draws do not
depend on the finding, so the difference image is the finding itself and must lie where the
report says (side, lobe, base, apex).
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter

from medlens.config import SyntheticConfig
from medlens.data.phantom import PhantomImage, render_study, render_with_masks, sample_studies
from medlens.data.phantom.anatomy import Frame, build_geometry
from medlens.data.phantom.render import COARSE_FROM

SIZE = 192


@pytest.fixture(scope="module")
def studies():
    return sample_studies(SyntheticConfig(n_images=3000, n_patients=1500, seed=31))


def pick(studies, test, n=6):
    found = [s for s in studies if test(s)][:n]
    assert found, "no study with this finding in the sample"
    return found


def pixels(study, size=SIZE) -> np.ndarray:
    return np.asarray(render_study(study, size), dtype=np.float32)


def without(study, **changes) -> np.ndarray:
    return pixels(replace(study, findings=replace(study.findings, **changes)))


def to_px(study, point, size=SIZE) -> tuple[float, float]:
    x, y = Frame.of(study.acquisition, size).px(np.array([point]))[0]
    return x, y


def side_half(study, diff: np.ndarray) -> tuple[float, float]:
    """Sum of |diff| in the image half of the patient's right (image left) and left."""
    cx = to_px(study, (study.anatomy.cx, 0.5))[0]
    cols = np.arange(diff.shape[1])
    return float(np.abs(diff[:, cols < cx]).sum()), float(np.abs(diff[:, cols >= cx]).sum())


@pytest.mark.parametrize("size", [48, 96, COARSE_FROM, 320, 321])
def test_size_mode_and_determinism(studies, size):
    s = studies[0]
    img = render_study(s, size)
    assert img.mode == "L" and img.size == (size, size)
    assert img.tobytes() == render_study(s, size).tobytes()
    assert img.tobytes() != render_study(studies[1], size).tobytes()


def test_renderer_is_picklable_and_renders_the_same(studies):
    fn = PhantomImage(studies[3], 96)
    again = pickle.loads(pickle.dumps(fn))
    assert again().tobytes() == fn().tobytes() == render_study(studies[3], 96).tobytes()


def test_looks_like_a_chest_radiograph(studies):
    s = next(s for s in studies if s.labels == ["No Finding"])
    img, masks = render_with_masks(s, 256)
    a = np.asarray(img, dtype=np.float32)
    lungs = masks["lung_right"] | masks["lung_left"]
    inner = lungs & ~masks["heart"]
    assert a[inner].mean() + 40 < a[masks["heart"]].mean()  # dark lungs, white heart
    assert a[:, :8].mean() < a[inner].mean()  # air outside the body is darkest
    # the heart sits mostly on the patient's left (image right)
    cols = np.nonzero(masks["heart"].any(axis=0))[0]
    mid = to_px(s, (s.anatomy.cx, 0.5), 256)[0]
    assert (cols > mid).sum() > 1.5 * (cols < mid).sum()


def test_stored_ratio_matches_the_rendered_masks(studies):
    chosen = (
        pick(studies, lambda s: s.findings.cardiomegaly is not None, 4)
        + pick(studies, lambda s: s.findings.cardiomegaly is None, 4)
        + pick(studies, lambda s: s.acquisition.view == "AP", 2)
    )
    for s in chosen:
        flat = replace(s, acquisition=replace(s.acquisition, rotation=0.0))  # widths are horizontal extents
        _, masks = render_with_masks(flat, 480)
        heart = np.nonzero(masks["heart"].any(axis=0))[0]
        thorax = np.nonzero((masks["lung_right"] | masks["lung_left"]).any(axis=0))[0]
        ratio = (heart.max() - heart.min() + 1) / (thorax.max() - thorax.min() + 1)
        assert ratio == pytest.approx(s.findings.ctr, abs=0.01), s.study_id
        assert (ratio > 0.5) == ("Cardiomegaly" in s.labels)  # the default threshold


def test_ap_film_magnifies_the_heart(studies):
    s = next(s for s in studies if s.acquisition.view == "PA" and s.findings.cardiomegaly is None)
    ap = replace(
        s,
        acquisition=replace(s.acquisition, view="AP", rotation=0.0),
        findings=replace(s.findings, ctr=round(s.anatomy.heart_ctr * 1.1, 4)),
    )
    pa = replace(s, acquisition=replace(s.acquisition, rotation=0.0))
    width = [np.ptp(np.nonzero(render_with_masks(x, 320)[1]["heart"].any(axis=0))[0]) for x in (pa, ap)]
    assert width[1] > 1.05 * width[0]


def angle_brightness(study, img: np.ndarray, side: str) -> float:
    """Mean grey level of a window just above and medial to the costophrenic angle, inside the lung."""
    x, y = build_geometry(study.anatomy, study.acquisition, study.findings.ctr).cp_angle(side)
    inward = -0.05 if side == "left" else 0.05
    px, py = to_px(study, (x + inward, y - 0.04))
    return float(img[int(py) - 3 : int(py) + 4, int(px) - 3 : int(px) + 4].mean())


def test_effusion_side_is_brighter_at_its_costophrenic_angle(studies):
    for s in pick(studies, lambda s: len(s.findings.effusions) == 1):
        side = s.findings.effusions[0].side
        other = "left" if side == "right" else "right"
        img = pixels(s)
        assert angle_brightness(s, img, side) > angle_brightness(s, img, other) + 15, s.study_id
        diff = img - without(s, effusions=())
        right, left = side_half(s, diff)
        assert (right if side == "right" else left) > 10 * (left if side == "right" else right)


def fine_detail(a: np.ndarray) -> np.ndarray:
    """Band-pass magnitude at the scale of vessel markings (below the width of a rib)."""
    return np.abs(gaussian_filter(a, 0.7) - gaussian_filter(a, 1.5))


def test_pneumothorax_side_has_less_lung_texture_at_the_apex(studies):
    for s in pick(
        studies, lambda s: s.findings.pneumothorax is not None and s.findings.pneumothorax.size != "small"
    ):
        ptx = s.findings.pneumothorax
        other = "left" if ptx.side == "right" else "right"
        img, masks = render_with_masks(s, 320)
        a = np.asarray(img, dtype=np.float32)
        # the rim, away from its edges, against its mirror image in the other lung
        rim = binary_erosion(masks["pneumothorax"], iterations=4)
        rows, cols = np.nonzero(rim)
        mid = to_px(s, (s.anatomy.cx, 0.5), 320)[0]
        mirror = np.zeros_like(rim)
        mirror[rows, np.clip(np.round(2 * mid - cols).astype(int), 0, 319)] = True
        mirror &= masks[f"lung_{other}"] & ~masks["heart"]
        assert rim.sum() > 500 and mirror.sum() > 200, s.study_id
        # the rim lies above the lung's mid-height: apical and lateral
        lung_rows = np.nonzero(masks[f"lung_{ptx.side}"].any(axis=1))[0]
        assert rows.mean() < lung_rows.mean(), s.study_id
        detail = fine_detail(a)
        assert detail[rim].mean() < detail[mirror].mean(), s.study_id  # absent lung markings
        assert a[rim].mean() < a[mirror].mean() - 10, s.study_id  # more lucent
        # same patient and exposure without the pneumothorax: the markings were there
        plain = np.asarray(
            render_study(replace(s, findings=replace(s.findings, pneumothorax=None)), 320), dtype=np.float32
        )
        assert detail[rim].mean() < fine_detail(plain)[rim].mean(), s.study_id
        assert not (masks["pneumothorax"] & masks[f"lung_{other}"]).any()


def test_consolidation_lies_in_its_lung(studies):
    for s in pick(studies, lambda s: s.findings.consolidation is not None):
        diff = pixels(s) - without(s, consolidation=None)
        right, left = side_half(s, diff)
        assert diff.max() > 40
        assert (right if s.findings.consolidation.side == "right" else left) > 0.9 * (right + left)
        # upper-lobe opacities are higher than lower-lobe ones
        rows = np.nonzero(np.abs(diff).max(axis=1) > 20)[0]
        centre = rows.mean() / SIZE
        assert centre < 0.5 if "upper" in s.findings.consolidation.lobe else centre > 0.4


def test_lesions_are_bright_blobs_where_the_meta_puts_them(studies):
    for s in pick(studies, lambda s: bool(s.findings.lesions)):
        diff = pixels(s, 320) - np.asarray(
            render_study(replace(s, findings=replace(s.findings, lesions=())), 320), dtype=np.float32
        )
        geo = build_geometry(s.anatomy, s.acquisition, s.findings.ctr)
        hidden = (
            s.findings.effusions or s.findings.consolidation
        )  # a nodule in fluid or airspace disease is hidden
        for les in s.findings.lesions:
            x, y = to_px(s, geo.lung_point(les.side, les.u, les.v), 320)
            centre = diff[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].mean()
            assert centre > 25 or hidden, (s.study_id, les)
        assert diff.max() > 40


def test_edema_is_bilateral_and_perihilar(studies):
    for s in pick(studies, lambda s: s.findings.edema is not None and not s.findings.effusions):
        diff = pixels(s) - without(s, edema=None)
        right, left = side_half(s, diff)
        assert min(right, left) > 0.25 * max(right, left)  # an enlarged heart hides part of the left hilum
        assert diff.mean() > 1.0


def test_atelectasis_band_is_on_its_sides(studies):
    for s in pick(
        studies, lambda s: s.findings.atelectasis is not None and s.findings.atelectasis.zone == "mid"
    ):
        diff = pixels(s) - without(s, atelectasis=None)  # mid bands move no hemidiaphragm
        right, left = side_half(s, diff)
        sides = s.findings.atelectasis.sides
        if len(sides) == 1:
            assert (right if sides[0] == "right" else left) > 0.9 * (right + left)
        else:
            assert min(right, left) > 0.3 * max(right, left)


def test_basal_atelectasis_raises_the_hemidiaphragm(studies):
    s = next(
        s
        for s in studies
        if s.findings.atelectasis is not None
        and s.findings.atelectasis.zone == "lower"
        and len(s.findings.atelectasis.sides) == 1
    )
    side = s.findings.atelectasis.sides[0]
    _, masks = render_with_masks(s, 320)
    _, flat = render_with_masks(replace(s, findings=replace(s.findings, atelectasis=None)), 320)
    assert masks[f"lung_{side}"].sum() < flat[f"lung_{side}"].sum()


def test_devices_are_bright_lines(studies):
    for s in pick(studies, lambda s: bool(s.findings.devices)):
        diff = pixels(s) - without(s, devices=())
        assert (diff > 60).sum() > 20, s.study_id
        assert (diff < -5).sum() == 0
