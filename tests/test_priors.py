import numpy as np
import pytest

from geosparse.priors import JointDistribution, PriorError


def test_builtin_table_matches_published_values():
    t = JointDistribution.builtin('nlcd-landcover4')
    assert t.fine_names == ['water', 'forest', 'field', 'impervious']
    i = t.coarse_codes.index(22)
    np.testing.assert_allclose(t.eta[i], [0.01, 0.31, 0.34, 0.35])
    np.testing.assert_allclose(t.rho[i], [0.06, 0.24, 0.21, 0.18])
    assert t.argmax_map()[41] == 1 and t.argmax_map()[24] == 3


def test_csv_round_trip(tmp_path):
    t = JointDistribution.builtin()
    t.to_csv(tmp_path / 'table.csv')
    u = JointDistribution.from_csv(tmp_path / 'table.csv')
    assert u.coarse_codes == t.coarse_codes and u.fine_codes == t.fine_codes
    np.testing.assert_allclose(u.eta, t.eta)
    np.testing.assert_allclose(u.rho, t.rho)
    v = JointDistribution.load(t.to_dict())
    np.testing.assert_allclose(v.eta, t.eta)


def _write(path, rows):
    path.write_text('coarse_code,a_mean,a_std,b_mean,b_std\n' + '\n'.join(rows))
    return path


def test_validation_errors(tmp_path):
    with pytest.raises(PriorError, match=r'sum to 0\.500'):
        JointDistribution.from_csv(_write(tmp_path / 'x.csv', ['1,0.2,0.1,0.3,0.1']))
    with pytest.raises(PriorError, match='non-positive std'):
        JointDistribution.from_csv(_write(tmp_path / 'y.csv', ['1,0.5,0.0,0.5,0.1']))
    (tmp_path / 'z.csv').write_text('coarse_code,a_mean\n1,1.0\n')
    with pytest.raises(PriorError, match='a_std'):
        JointDistribution.from_csv(tmp_path / 'z.csv')
    with pytest.raises(PriorError, match='no such'):
        JointDistribution.from_csv(tmp_path / 'missing.csv')
    with pytest.raises(PriorError, match=r'\[99\]'):
        JointDistribution.builtin().check_codes([41, 99], 'nlcd.tif')


@pytest.mark.parametrize(
    ('content', 'match'),
    [
        (b'coarse_code,a_mean,a_std,b_mean,b_std\n1,0.5,0.1\n', 'row 2 has 3 fields'),
        (
            b'# x\ncoarse_code,a_mean,a_std,b_mean,b_std\n1,0.5,0.1,0.5,0.1,7\n',
            'row 3 has 6 fields where the header has 5',
        ),
        (b'# fine_codes: 1,x\ncoarse_code,a_mean,a_std\n1,1,0.1\n', 'integer fine'),
        (b'\xff\xfe\x00\x89PNG', 'not a UTF-8 text CSV'),
    ],
)
def test_malformed_csv_gets_a_one_line_error(tmp_path, content, match):
    """Short or long rows, a bad fine-code line and binary files name the file and
    the problem (before: a TypeError about None, or a raw ValueError)."""
    path = tmp_path / 'table.csv'
    path.write_bytes(content)
    with pytest.raises(PriorError, match=match) as err:
        JointDistribution.from_csv(path)
    assert str(path) in str(err.value) and '\n' not in str(err.value)


def test_a_folder_is_not_a_table(tmp_path):
    with pytest.raises(PriorError, match='not a file'):
        JointDistribution.from_csv(tmp_path)


def test_from_intervals_uniform_moments():
    t = JointDistribution.from_intervals(
        {22: {'impervious': (0.20, 0.49)}}, ['water', 'forest', 'field', 'impervious']
    )
    assert t.eta[0, 3] == pytest.approx(0.345)
    assert t.rho[0, 3] == pytest.approx(0.29 / np.sqrt(12))
    assert t.eta[0].sum() == pytest.approx(1.0)


def test_estimate_recovers_fractions():
    coarse = np.repeat([[11, 41]], 10, axis=0).repeat(5, axis=1)  # 10 x 10
    fine = np.ones((10, 10), dtype=int)
    fine[:, 5:] = 2
    fine[:5, 5:] = 3  # the 41 block: half forest(2), half field(3)
    t = JointDistribution.estimate(coarse, fine, fine_codes=[1, 2, 3, 4])
    i = t.coarse_codes.index(41)
    np.testing.assert_allclose(t.eta[i], [0, 0.5, 0.5, 0])
    with pytest.raises(PriorError, match=r'\[7\]'):
        JointDistribution.estimate(coarse, fine * 0 + 7, fine_codes=[1, 2, 3, 4])


def test_filled_from_adds_the_missing_coarse_rows_only():
    builtin = JointDistribution.builtin()
    mine = builtin.subset([41, 81])
    mine.eta[0] = [0.0, 0.6, 0.4, 0.0]  # this area's own forest row
    mine.frequency = np.array([0.7, 0.3])
    full = mine.filled_from(builtin)
    assert full.coarse_codes[:2] == [41, 81]
    assert sorted(full.coarse_codes) == sorted(builtin.coarse_codes)
    np.testing.assert_allclose(full.eta[0], [0.0, 0.6, 0.4, 0.0])  # kept, not replaced
    i, j = full.coarse_codes.index(82), builtin.coarse_codes.index(82)
    np.testing.assert_allclose(full.eta[i], builtin.eta[j])
    np.testing.assert_allclose(full.rho[i], builtin.rho[j])
    assert full.frequency[i] == 0 and full.frequency[:2].tolist() == [0.7, 0.3]
    other = JointDistribution([1], ['a', 'b'], [[0.5, 0.5]], [[0.1, 0.1]])
    with pytest.raises(PriorError, match='same fine classes'):
        mine.filled_from(other)
