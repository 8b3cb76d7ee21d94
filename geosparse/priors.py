r"""Joint distributions between coarse and fine classes.

Label super-resolution (Malkin et al., "Label Super-Resolution Networks", ICLR 2019)
needs, for every coarse class ``z`` and fine class ``l``, a Gaussian over the fraction
of fine class ``l`` inside a block labelled ``z``: mean :math:`\eta_{l,z}` and standard
deviation :math:`\rho_{l,z}`. :class:`JointDistribution` holds that table and builds it
from a CSV file, from interval constraints in class descriptions, or by counting
paired coarse and fine rasters.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    'BUILTIN_TABLES',
    'NLCD_DEVELOPED',
    'NLCD_NAMES',
    'JointDistribution',
    'PriorError',
]

#: NLCD 2011 legend (code -> name).
NLCD_NAMES: dict[int, str] = {
    11: 'Open Water',
    12: 'Perennial Ice/Snow',
    21: 'Developed, Open Space',
    22: 'Developed, Low Intensity',
    23: 'Developed, Medium Intensity',
    24: 'Developed, High Intensity',
    31: 'Barren Land (Rock/Sand/Clay)',
    41: 'Deciduous Forest',
    42: 'Evergreen Forest',
    43: 'Mixed Forest',
    52: 'Shrub/Scrub',
    71: 'Grassland/Herbaceous',
    81: 'Pasture/Hay',
    82: 'Cultivated Crops',
    90: 'Woody Wetlands',
    95: 'Emergent Herbaceous Wetlands',
}

#: The NLCD developed classes, the default subset for "developed" metrics.
NLCD_DEVELOPED: tuple[int, ...] = (21, 22, 23, 24)

#: Built-in tables shipped with the package (name -> file in ``geosparse/data``).
BUILTIN_TABLES: dict[str, str] = {
    'nlcd-landcover4': 'nlcd_to_landcover4_maryland2013.csv',
}


class PriorError(InputError):
    """A joint distribution is malformed or does not fit the data.

    .. versionadded:: 0.1
    """


@dataclass
class JointDistribution:
    r"""Gaussian joint distribution between coarse classes and fine classes.

    For coarse class :math:`z` and fine class :math:`l`, the fraction of fine class
    :math:`l` in a block labelled :math:`z` is modelled as
    :math:`\mathcal{N}(\eta_{l,z}, \rho_{l,z}^2)` (Malkin et al., ICLR 2019, Sec. 3).

    .. versionadded:: 0.1

    Attributes:
        coarse_codes: raster values of the coarse classes (e.g. NLCD codes), one per row.
        fine_names: names of the fine classes, one per column.
        eta: array ``(Z, L)`` of mean fractions; rows sum to about 1.
        rho: array ``(Z, L)`` of standard deviations; positive.
        fine_codes: raster values of the fine classes in label rasters
            (default ``1..L``; 0 is then nodata).
        coarse_names: optional names of the coarse classes.
        frequency: optional relative frequency of each coarse class.
    """

    coarse_codes: list[int]
    fine_names: list[str]
    eta: np.ndarray
    rho: np.ndarray
    fine_codes: list[int] = field(default_factory=list)
    coarse_names: list[str] = field(default_factory=list)
    frequency: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.eta = np.asarray(self.eta, dtype=np.float64)
        self.rho = np.asarray(self.rho, dtype=np.float64)
        self.coarse_codes = [int(c) for c in self.coarse_codes]
        if not self.fine_codes:
            self.fine_codes = list(range(1, len(self.fine_names) + 1))
        self.fine_codes = [int(c) for c in self.fine_codes]
        if not self.coarse_names:
            self.coarse_names = [NLCD_NAMES.get(c, str(c)) for c in self.coarse_codes]
        if self.frequency is not None:
            self.frequency = np.asarray(self.frequency, dtype=np.float64)

    # ------------------------------------------------------------------ checks
    def validate(self, tolerance: float = 0.05, source: str = 'table') -> None:
        r"""Check shapes, ranges and normalisation.

        Args:
            tolerance: largest allowed deviation of :math:`\sum_l \eta_{l,z}` from 1.
            source: name of the file or object, used in error messages.

        Raises:
            PriorError: naming the offending coarse class and the fix.
        """
        z, n_fine = len(self.coarse_codes), len(self.fine_names)
        if z == 0 or n_fine == 0:
            raise PriorError(f'{source}: the table has no coarse or no fine classes.')
        if self.eta.shape != (z, n_fine) or self.rho.shape != (z, n_fine):
            raise PriorError(
                f'{source}: eta {self.eta.shape} and rho {self.rho.shape} must both be '
                f'(coarse classes, fine classes) = ({z}, {n_fine}).'
            )
        if len(set(self.coarse_codes)) != z:
            raise PriorError(f'{source}: duplicate coarse codes {self.coarse_codes}.')
        if len(self.fine_codes) != n_fine or len(set(self.fine_codes)) != n_fine:
            raise PriorError(f'{source}: fine_codes must be {n_fine} distinct values.')
        if not (np.isfinite(self.eta).all() and np.isfinite(self.rho).all()):
            raise PriorError(f'{source}: eta and rho must be finite numbers.')
        if (self.eta < 0).any() or (self.eta > 1).any():
            raise PriorError(f'{source}: every mean fraction eta must lie in [0, 1].')
        for i, code in enumerate(self.coarse_codes):
            total = float(self.eta[i].sum())
            if abs(total - 1.0) > tolerance:
                raise PriorError(
                    f'{source}: the means of coarse class {code} sum to {total:.3f}, not '
                    f'1 (tolerance {tolerance}); fix the row so that its fine-class '
                    'fractions add up to 1.'
                )
            if (self.rho[i] <= 0).any():
                bad = [self.fine_names[j] for j in np.where(self.rho[i] <= 0)[0]]
                raise PriorError(
                    f'{source}: coarse class {code} has non-positive std for {bad}; '
                    'every std rho must be > 0 (use a small value such as 0.01).'
                )

    def check_codes(self, codes: Sequence[int] | np.ndarray, source: str) -> None:
        """Raise if raster values are missing from the table.

        Args:
            codes: coarse values found in the data (nodata already removed).
            source: the file or dataset they came from.

        Raises:
            PriorError: listing the missing codes.
        """
        missing = sorted(set(int(c) for c in np.unique(codes)) - set(self.coarse_codes))
        if missing:
            raise PriorError(
                f'{source}: coarse codes {missing} are not in the joint distribution '
                f'(which has {self.coarse_codes}); add rows for them to the table, or '
                'declare them nodata.'
            )

    # -------------------------------------------------------------- accessors
    @property
    def num_coarse(self) -> int:
        """Number of coarse classes."""
        return len(self.coarse_codes)

    @property
    def num_fine(self) -> int:
        """Number of fine classes."""
        return len(self.fine_names)

    def argmax_map(self) -> dict[int, int]:
        """Most likely fine class index for each coarse code (the no-learning map)."""
        return {c: int(np.argmax(self.eta[i])) for i, c in enumerate(self.coarse_codes)}

    def subset(self, codes: Sequence[int]) -> JointDistribution:
        """Return a table restricted to the given coarse codes (order kept)."""
        idx = [self.coarse_codes.index(int(c)) for c in codes]
        return JointDistribution(
            coarse_codes=[self.coarse_codes[i] for i in idx],
            fine_names=list(self.fine_names),
            eta=self.eta[idx],
            rho=self.rho[idx],
            fine_codes=list(self.fine_codes),
            coarse_names=[self.coarse_names[i] for i in idx],
            frequency=None if self.frequency is None else self.frequency[idx],
        )

    def filled_from(self, other: JointDistribution) -> JointDistribution:
        """This table plus ``other``'s rows for the coarse codes it lacks.

        An estimated table holds only the coarse classes that occur where fine labels
        were; the coarse labels of the area to map often hold others (e.g. cultivated
        crops next to forest). Their rows are taken from ``other`` (e.g. the built-in
        table); their ``frequency`` is 0 (not seen in the estimate).

        .. versionadded:: 0.8

        Raises:
            PriorError: if the two tables have other fine classes.
        """
        if list(other.fine_names) != list(self.fine_names) or list(
            other.fine_codes
        ) != list(self.fine_codes):
            raise PriorError(
                f'cannot fill a table of fine classes {self.fine_names} (codes '
                f'{self.fine_codes}) from one of {other.fine_names} (codes '
                f'{other.fine_codes}); give a table with the same fine classes.'
            )
        add = [
            i for i, c in enumerate(other.coarse_codes) if c not in self.coarse_codes
        ]
        frequency = None
        if self.frequency is not None:
            frequency = np.concatenate([self.frequency, np.zeros(len(add))])
        return JointDistribution(
            coarse_codes=[*self.coarse_codes, *(other.coarse_codes[i] for i in add)],
            fine_names=list(self.fine_names),
            eta=np.vstack([self.eta, other.eta[add]]),
            rho=np.vstack([self.rho, other.rho[add]]),
            fine_codes=list(self.fine_codes),
            coarse_names=[*self.coarse_names, *(other.coarse_names[i] for i in add)],
            frequency=frequency,
        )

    # ------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (stored in checkpoints' hyperparameters)."""
        out: dict[str, Any] = {
            'coarse_codes': list(self.coarse_codes),
            'fine_names': list(self.fine_names),
            'fine_codes': list(self.fine_codes),
            'coarse_names': list(self.coarse_names),
            'eta': self.eta.tolist(),
            'rho': self.rho.tolist(),
        }
        if self.frequency is not None:
            out['frequency'] = self.frequency.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JointDistribution:
        """Inverse of :meth:`to_dict`."""
        return cls(
            coarse_codes=list(data['coarse_codes']),
            fine_names=list(data['fine_names']),
            eta=np.asarray(data['eta']),
            rho=np.asarray(data['rho']),
            fine_codes=list(data.get('fine_codes') or []),
            coarse_names=list(data.get('coarse_names') or []),
            frequency=(
                None if data.get('frequency') is None else np.asarray(data['frequency'])
            ),
        )

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> JointDistribution:
        """Read a table with columns ``<fine>_mean`` and ``<fine>_std``.

        The coarse code column is ``nlcd_code`` or ``coarse_code``; optional columns
        are ``nlcd_name``/``coarse_name`` and ``block_frequency``. An optional first
        comment line ``# fine_codes: 1,2,3,4`` sets the fine raster values.

        Args:
            path: CSV file.

        Returns:
            The validated table.

        Raises:
            PriorError: if the file is malformed.
        """
        path = Path(path)
        if not path.exists():
            raise PriorError(f'{path}: no such joint-distribution file.')
        if not path.is_file():
            raise PriorError(f'{path}: not a file; give a joint-distribution CSV.')
        try:
            text = path.read_text(encoding='utf-8').splitlines()
        except UnicodeDecodeError as err:
            raise PriorError(
                f'{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start}); '
                'give the joint distribution as CSV (geosparse priors estimate '
                'writes one).'
            ) from err
        fine_codes: list[int] = []
        first = 2  # the file's line of the first row
        if text and text[0].startswith('#'):
            first = 3
            head = text.pop(0).lstrip('#').strip()
            if head.startswith('fine_codes:'):
                try:
                    fine_codes = [int(v) for v in head.split(':', 1)[1].split(',')]
                except ValueError as err:
                    raise PriorError(
                        f'{path}: the first line {head!r} must list integer fine '
                        "codes, as in '# fine_codes: 1,2,3,4'."
                    ) from err
        reader = csv.DictReader(text)
        rows = list(reader)
        if not rows:
            raise PriorError(f'{path}: the table has no rows.')
        width = len(reader.fieldnames or [])
        for line, r in enumerate(rows, start=first):
            if None in r or None in r.values():
                n = width + len(r.get(None) or []) - sum(v is None for v in r.values())
                raise PriorError(
                    f'{path}: row {line} has {n} fields where the header has '
                    f'{width}; give every row one value per column.'
                )
        cols = list(rows[0].keys())
        code_col = next((c for c in ('nlcd_code', 'coarse_code') if c in cols), None)
        if code_col is None:
            raise PriorError(
                f'{path}: needs a "coarse_code" (or "nlcd_code") column; found {cols}.'
            )
        name_col = next((c for c in ('nlcd_name', 'coarse_name') if c in cols), None)
        fine = [c[: -len('_mean')] for c in cols if c.endswith('_mean')]
        missing = [f'{f}_std' for f in fine if f'{f}_std' not in cols]
        if not fine or missing:
            raise PriorError(
                f'{path}: needs <class>_mean and <class>_std columns for every fine '
                f'class; missing {missing or "all"}.'
            )
        try:
            table = cls(
                coarse_codes=[int(r[code_col]) for r in rows],
                fine_names=fine,
                eta=np.array([[float(r[f'{f}_mean']) for f in fine] for r in rows]),
                rho=np.array([[float(r[f'{f}_std']) for f in fine] for r in rows]),
                fine_codes=fine_codes,
                coarse_names=[r[name_col] for r in rows] if name_col else [],
                frequency=(
                    np.array([float(r['block_frequency']) for r in rows])
                    if 'block_frequency' in cols
                    else None
                ),
            )
        except (TypeError, ValueError) as err:
            raise PriorError(f'{path}: a value is not a number ({err}).') from err
        table.validate(source=str(path))
        return table

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table as CSV (atomically), readable by :meth:`from_csv`.

        Args:
            path: output file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
        try:
            with os.fdopen(fd, 'w', newline='') as f:
                f.write('# fine_codes: ' + ','.join(map(str, self.fine_codes)) + '\n')
                writer = csv.writer(f)
                header = ['coarse_code', 'coarse_name']
                if self.frequency is not None:
                    header.append('block_frequency')
                for name in self.fine_names:
                    header += [f'{name}_mean', f'{name}_std']
                writer.writerow(header)
                for i, code in enumerate(self.coarse_codes):
                    row: list[Any] = [code, self.coarse_names[i]]
                    if self.frequency is not None:
                        row.append(f'{self.frequency[i]:.6g}')
                    for j in range(self.num_fine):
                        row += [f'{self.eta[i, j]:.6g}', f'{self.rho[i, j]:.6g}']
                    writer.writerow(row)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def builtin(cls, name: str = 'nlcd-landcover4') -> JointDistribution:
        """Load a table shipped with geosparse.

        ``nlcd-landcover4``: NLCD -> {water, forest, field, impervious}, measured over
        Maryland 2013 (Malkin et al., ICLR 2019, Table 4).

        Args:
            name: one of :data:`BUILTIN_TABLES`.

        Returns:
            The table.
        """
        if name not in BUILTIN_TABLES:
            raise PriorError(
                f'unknown built-in joint distribution {name!r}; choose one of '
                f'{sorted(BUILTIN_TABLES)} or give a CSV path.'
            )
        ref = resources.files('geosparse') / 'data' / BUILTIN_TABLES[name]
        with resources.as_file(ref) as path:
            return cls.from_csv(path)

    @classmethod
    def load(
        cls, spec: str | os.PathLike[str] | Mapping[str, Any] | JointDistribution
    ) -> JointDistribution:
        """Load from a built-in name, a CSV path, a :meth:`to_dict` mapping or a table.

        Raises:
            PriorError: for a table that fails validation, or another kind of value.
        """
        if isinstance(spec, JointDistribution):
            spec.validate(source='joint distribution')
            return spec
        if not isinstance(spec, str | os.PathLike | Mapping):
            raise PriorError(
                f'priors={type(spec).__name__}: give a built-in table name '
                f'({", ".join(BUILTIN_TABLES)}), a CSV path, a JointDistribution or '
                'its to_dict() mapping.'
            )
        if isinstance(spec, Mapping):
            table = cls.from_dict(spec)
            table.validate(source='joint distribution')
            return table
        if str(spec) in BUILTIN_TABLES:
            return cls.builtin(str(spec))
        return cls.from_csv(spec)

    # ------------------------------------------------------------ builders
    @classmethod
    def from_intervals(
        cls,
        intervals: Mapping[int, Mapping[str, tuple[float, float]]],
        fine_names: Sequence[str],
        fine_codes: Sequence[int] = (),
    ) -> JointDistribution:
        r"""Build a table from interval constraints such as NLCD class descriptions.

        A constraint ``lo <= fraction_l <= hi`` is read as a uniform distribution on
        ``[lo, hi]``: :math:`\eta = (lo + hi)/2`, :math:`\rho = (hi - lo)/\sqrt{12}`.
        Fine classes without a constraint share the remaining mass
        :math:`1 - \sum \eta` equally, with the std of a uniform on
        ``[0, remaining]``. E.g. "Developed, Low Intensity: impervious 20-49 %" gives
        impervious :math:`\eta = 0.345, \rho = 0.084`.

        Args:
            intervals: coarse code -> {fine name: (lo, hi)}.
            fine_names: all fine classes.
            fine_codes: raster values of the fine classes.

        Returns:
            The table (validated).
        """
        names = list(fine_names)
        codes = sorted(intervals)
        eta = np.zeros((len(codes), len(names)))
        rho = np.zeros_like(eta)
        for i, code in enumerate(codes):
            given = intervals[code]
            unknown = [n for n in given if n not in names]
            if unknown:
                raise PriorError(
                    f'coarse class {code}: fine classes {unknown} are not in {names}.'
                )
            for name, (lo, hi) in given.items():
                if not 0 <= lo <= hi <= 1:
                    raise PriorError(
                        f'coarse class {code}, {name}: the interval [{lo}, {hi}] must '
                        'satisfy 0 <= lo <= hi <= 1.'
                    )
                j = names.index(name)
                eta[i, j] = (lo + hi) / 2
                rho[i, j] = max((hi - lo) / math.sqrt(12), 0.01)
            rest = [j for j, n in enumerate(names) if n not in given]
            remaining = max(0.0, 1.0 - eta[i].sum())
            for j in rest:
                eta[i, j] = remaining / len(rest)
                rho[i, j] = max(remaining / math.sqrt(12), 0.01)
            if not rest and eta[i].sum() > 0:
                eta[i] /= eta[i].sum()
        table = cls(codes, names, eta, rho, fine_codes=list(fine_codes))
        table.validate(tolerance=0.05, source='interval constraints')
        return table

    @classmethod
    def estimate(
        cls,
        coarse: np.ndarray,
        fine: np.ndarray,
        fine_codes: Sequence[int],
        fine_names: Sequence[str] | None = None,
        coarse_nodata: int | None = 0,
        fine_nodata: int | None = 0,
        min_std: float = 0.01,
        block_ids: np.ndarray | None = None,
    ) -> JointDistribution:
        r"""Estimate the table by counting fine classes inside coarse blocks.

        For each block (a coarse pixel, given by ``block_ids``; without them, all
        pixels of one coarse class form one block) the fraction of each fine class
        is measured; :math:`\eta_{l,z}` is the mean and
        :math:`\rho_{l,z}` the standard deviation of those fractions over all blocks
        of class :math:`z` (the procedure of Malkin et al., Sec. 5.1).

        Args:
            coarse: coarse codes on the fine grid, any shape.
            fine: fine codes on the same grid.
            fine_codes: fine raster values, in column order.
            fine_names: names of the fine classes (default: the codes).
            coarse_nodata: coarse value to ignore.
            fine_nodata: fine value to ignore.
            min_std: floor on rho (single-block classes would otherwise get 0).
            block_ids: integer block index per pixel (e.g. the coarse pixel each fine
                pixel falls in). Without it each coarse class forms one block.

        Returns:
            The table.
        """
        coarse = np.asarray(coarse).ravel()
        fine = np.asarray(fine).ravel()
        if coarse.shape != fine.shape:
            raise PriorError(
                f'coarse and fine rasters differ in size ({coarse.size} vs '
                f'{fine.size} pixels); they must share one grid.'
            )
        valid = np.ones(coarse.shape, dtype=bool)
        if coarse_nodata is not None:
            valid &= coarse != coarse_nodata
        if fine_nodata is not None:
            valid &= fine != fine_nodata
        if not valid.any():
            raise PriorError('coarse and fine rasters have no valid pixel in common.')
        fine_codes = list(fine_codes)
        lut = {c: i for i, c in enumerate(fine_codes)}
        unknown = set(np.unique(fine[valid]).tolist()) - set(lut)
        if unknown:
            raise PriorError(
                f'fine raster holds values {sorted(unknown)} that are not among the '
                f'fine codes {fine_codes}; pass them with --fine-codes or as nodata.'
            )
        blocks = (
            coarse.astype(np.int64)
            if block_ids is None
            else np.asarray(block_ids, dtype=np.int64).ravel()
        )
        c, f, b = coarse[valid], fine[valid], blocks[valid]
        fidx = np.vectorize(lut.__getitem__, otypes=[np.int64])(f)
        ub, binv = np.unique(b, return_inverse=True)
        n_fine = len(fine_codes)
        counts = np.zeros((len(ub), n_fine))
        np.add.at(counts, (binv, fidx), 1)
        frac = counts / counts.sum(1, keepdims=True)
        block_code = np.zeros(len(ub), dtype=np.int64)
        block_code[binv] = c
        codes = sorted(np.unique(c).tolist())
        eta = np.zeros((len(codes), n_fine))
        rho = np.zeros_like(eta)
        freq = np.zeros(len(codes))
        for i, code in enumerate(codes):
            sel = frac[block_code == code]
            eta[i] = sel.mean(0)
            rho[i] = np.maximum(sel.std(0), min_std)
            freq[i] = len(sel)
        names = list(fine_names) if fine_names else [str(x) for x in fine_codes]
        return cls(codes, names, eta, rho, fine_codes, frequency=freq / freq.sum())
