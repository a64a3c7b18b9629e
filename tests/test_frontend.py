"""The front end against the official WavFrontend (golden fixture) and its own rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from minmo_core.config import FrontendConfig
from minmo_core.errors import CheckpointError
from minmo_core.understanding.frontend import CMVN, Frontend


@pytest.fixture(scope="module")
def golden(fixtures_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(fixtures_dir / "sensevoice" / "io.safetensors"))


@pytest.fixture(scope="module")
def frontend(fixtures_dir: Path) -> Frontend:
    cmvn = CMVN.from_file(fixtures_dir / "sensevoice" / "am.mvn", 560)
    return Frontend(FrontendConfig(), cmvn)


@pytest.mark.parity
def test_fbank_matches_official_kaldi_fbank(frontend: Frontend, golden: dict) -> None:
    fbank = frontend.fbank(golden["waveform"])
    assert fbank.shape == golden["fbank"].shape == (148, 80)
    np.testing.assert_allclose(fbank, golden["fbank"], atol=1e-3, rtol=0)


@pytest.mark.parity
def test_lfr_matches_official_apply_lfr(frontend: Frontend, golden: dict) -> None:
    np.testing.assert_array_equal(frontend.lfr(golden["fbank"]), golden["lfr"])


@pytest.mark.parity
def test_cmvn_file_parses_to_official_vectors(frontend: Frontend, golden: dict) -> None:
    np.testing.assert_array_equal(frontend.cmvn.shift, golden["cmvn"][0])
    np.testing.assert_array_equal(frontend.cmvn.scale, golden["cmvn"][1])


@pytest.mark.parity
def test_features_match_official_front_end(frontend: Frontend, golden: dict) -> None:
    feats = frontend(golden["waveform"])
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, golden["feats"], atol=1e-3, rtol=0)


def _lfr_by_loop(fbank: np.ndarray, m: int, n: int) -> np.ndarray:
    """FunASR's apply_lfr written as its plain loop, to check the vectorised version."""
    padded = np.concatenate([np.repeat(fbank[:1], (m - 1) // 2, 0), fbank])
    rows = []
    for i in range(-(-fbank.shape[0] // n)):
        window = padded[i * n : i * n + m]
        if window.shape[0] < m:
            window = np.concatenate([window, np.repeat(padded[-1:], m - window.shape[0], 0)])
        rows.append(window.reshape(-1))
    return np.stack(rows)


@pytest.mark.parametrize("frames", [1, 2, 5, 6, 7, 12, 13, 148, 1001])
def test_lfr_equals_the_reference_loop_for_every_edge_case(frames: int) -> None:
    fbank = np.random.default_rng(frames).standard_normal((frames, 80)).astype(np.float32)
    out = Frontend(FrontendConfig()).lfr(fbank)
    np.testing.assert_array_equal(out, _lfr_by_loop(fbank, 7, 6))


@pytest.mark.parametrize("samples", [0, 399, 400, 401, 24000, 160000])
def test_num_frames_predicts_the_feature_length(samples: int) -> None:
    frontend = Frontend(FrontendConfig())
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, samples).astype(np.float32)
    assert frontend(audio).shape[0] == frontend.num_frames(samples)


def test_cmvn_file_without_rescale_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "am.mvn"
    path.write_text("<Nnet>\n<AddShift> 2 2\n<LearnRateCoef> 0 [ 1 2 ]\n</Nnet>\n")
    with pytest.raises(CheckpointError, match=r"has no <Rescale> vector"):
        CMVN.from_file(path, 2)


def test_cmvn_file_of_the_wrong_width_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "am.mvn"
    path.write_text("<AddShift> 3 3\n<LearnRateCoef> 0 [ 1 2 3 ]\n<Rescale>\n[ 1 1 1 ]\n")
    with pytest.raises(CheckpointError, match=r"<AddShift> has 3 values, expected 560"):
        CMVN.from_file(path, 560)
