import numpy as np
import pandas as pd

from ptbxl.demographics import decode_demographics, encode_demographics, encode_one


def test_encode_normalises_and_masks_missing():
    df = pd.DataFrame(
        {"age": [60, 300, np.nan], "sex": [0, 1, 1], "height": [180, np.nan, 6], "weight": [90, 60, np.nan]}
    )

    values, mask = encode_demographics(df)

    assert values.dtype == np.float32 and values.shape == (3, 4)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_allclose(values[0], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(values[1, [0, 1, 3]], [1.5, 1.0, -1.0])  # 300 → 90 → (90-60)/20
    assert (values[mask == 0] == 0).all()


def test_encode_one_matches_frame_encoding():
    v, m = encode_one(age=45, sex=1)
    np.testing.assert_allclose(v, [-0.75, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(m, [1, 1, 0, 0])


def test_decode_inverts_encode_where_present():
    df = pd.DataFrame(
        {"age": [33.0, 95.0], "sex": [1.0, 0.0], "height": [160.0, np.nan], "weight": [55.0, 80.0]}
    )
    out = decode_demographics(*encode_demographics(df))
    np.testing.assert_allclose(out["age"], [33, 90])
    np.testing.assert_allclose(out["weight"], [55, 80])
    assert np.isnan(out.loc[1, "height"]) and out.loc[0, "height"] == 160


def test_demo_dataset_has_mostly_missing_height(demo_ptbxl):
    from ptbxl.layout import read_database

    _, mask = encode_demographics(read_database(demo_ptbxl))
    assert mask[:, 0].mean() > 0.9 and mask[:, 1].mean() == 1.0
    assert 0.1 < mask[:, 2].mean() < 0.6
