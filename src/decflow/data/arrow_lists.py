"""List columns kept as Arrow arrays in pandas (``pd.ArrowDtype``): partition tasks read them
so (``sources.read_chunk(arrow_lists=True)``), and the validation and the encoder read them
without per-row Python work; ``plain_lists`` gives the usual one numpy array per row."""

import pandas as pd
import pyarrow as pa


def is_list_type(t: pa.DataType) -> bool:
    """Any of Arrow's list flavours (list, large_list, fixed_size_list)."""
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def list_type(dtype) -> pa.DataType | None:
    """The Arrow list type of an Arrow-backed pandas list column, else None."""
    if isinstance(dtype, pd.ArrowDtype) and is_list_type(dtype.pyarrow_dtype):
        return dtype.pyarrow_dtype
    return None


def keep_lists(t: pa.DataType) -> pd.ArrowDtype | None:
    """``types_mapper`` for ``to_pandas``: list columns stay Arrow arrays."""
    return pd.ArrowDtype(t) if is_list_type(t) else None


def plain_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its Arrow list columns as pandas gets them from Parquet by default: one
    numpy array per row."""
    arrow = [c for c, t in frame.dtypes.items() if list_type(t) is not None]
    if not arrow:
        return frame
    return frame.assign(**{c: pd.Series(frame[c].array.__arrow_array__().to_pandas().array,
                                        index=frame.index, name=c) for c in arrow})
