import numpy as np

from trainer.unit_vectors import describe, off_unit_rows


def test_rows_off_the_unit_sphere_are_found():
    x = np.asarray([[1, 0], [0.6, 0.8], [3, 4], [np.nan, 0], [np.inf, 0], [0, 0],
                    [0.6, 0.8005], [0.6, 0.81]], dtype=np.float32)
    # |(0.6, 0.8005)| = 1.0004 is within 1e-3 of 1; |(0.6, 0.81)| = 1.008 is not.
    assert off_unit_rows(x).tolist() == [2, 3, 4, 5, 7]
    assert off_unit_rows(np.zeros((0, 4), np.float32)).tolist() == []
    assert describe(x, off_unit_rows(x), shown=2) == (
        "5 vectors are not of length 1: row 2 (norm 5), row 3 (norm nan) and 3 more")
    assert describe(x, np.asarray([2]), ["a/b.png"] * 8) == (
        "1 vector is not of length 1: a/b.png (norm 5)")
