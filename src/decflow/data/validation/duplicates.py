"""The exact duplicate-id finder: ids of every batch hashed into buckets, each bucket checked
whole, so a table larger than memory is checked exactly."""

from dataclasses import dataclass
from typing import TYPE_CHECKING
import numpy as np
import pandas as pd
from decflow.data.validation.wording import dedupe, jsonable
if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Duplicates:
    """Ids that occur more than once across every batch (exact)."""

    n_rows: int  # rows whose id is shared with another row
    n_values: int  # distinct duplicated ids
    sample: list  # up to sample_size duplicated ids
    partitions: list[str]  # partitions holding a duplicated id


def find_duplicates(parts: list[tuple[np.ndarray, np.ndarray | None]], sample_size: int,
                    partition_names: list[str] | None = None, per_partition: bool = False
                    ) -> Duplicates:
    """Exact duplicate ids over ``parts`` (ids, partition codes or None); nulls are ignored.

    With ``per_partition`` an id may repeat across partitions (daily snapshot tables) and
    only repeats within one partition count. Over Dask, ids are first split by hash into
    buckets so each call sees one bucket of the whole window (see
    ``decflow.engine.partitions``); here they only need to fit one process.
    """
    if per_partition and parts:
        groups: dict[int, list] = {}
        for ids, codes in parts:
            ids = np.asarray(ids)
            codes = codes if codes is not None else np.full(len(ids), -1)
            for c in np.unique(codes):
                groups.setdefault(int(c), []).append((ids[codes == c], codes[codes == c]))
        return merge_duplicates([find_duplicates(g, sample_size, partition_names)
                                 for g in groups.values()], sample_size)
    arrays = [np.asarray(p) for p, _ in parts]
    codes = (np.concatenate([c if c is not None else np.full(len(p), -1)
                             for p, c in zip(arrays, (c for _, c in parts))])
             if parts else np.empty(0, np.int64))
    names = partition_names or []
    if arrays and all(a.dtype.kind in "iuf" for a in arrays):
        # numbers: sort once (NaN is null and left out); equal neighbours are duplicates
        ids = np.concatenate(arrays)
        keep = ~np.isnan(ids) if ids.dtype.kind == "f" else np.ones(len(ids), bool)
        ids, codes = ids[keep], codes[keep]
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        same = s[1:] == s[:-1]
        dup_sorted = np.zeros(len(s), bool)
        dup_sorted[1:] |= same
        dup_sorted[:-1] |= same
        dup = np.zeros(len(s), bool)
        dup[order] = dup_sorted
        values = dedupe([jsonable(v) for v in ids[dup][:100 * sample_size].tolist()])
        n_values = int(len(np.unique(ids[dup])))
    else:
        series = pd.Series(np.concatenate(arrays).astype(object) if arrays else [],
                           dtype=object)
        keep = ~series.isna().to_numpy()
        series, codes = series[keep].reset_index(drop=True), codes[keep]
        dup = series.duplicated(keep=False).to_numpy()
        values = dedupe([jsonable(v) for v in series[dup].head(100 * sample_size).tolist()])
        n_values = int(series[dup].nunique())
    return Duplicates(int(dup.sum()), n_values, values[:sample_size],
                      sorted({names[c] for c in np.unique(codes[dup]) if 0 <= c < len(names)}))


def merge_duplicates(parts: list[Duplicates], sample_size: int) -> Duplicates:
    """Add up ``Duplicates`` of disjoint id buckets."""
    return Duplicates(sum(p.n_rows for p in parts), sum(p.n_values for p in parts),
                      [v for p in parts for v in p.sample][:sample_size],
                      sorted({d for p in parts for d in p.partitions}))
