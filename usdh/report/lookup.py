"""Hash lookup within Hamming radius 2: the use of binary codes that needs no ranking, so the
report shows its precision, recall and how often it returns nothing."""

from __future__ import annotations

import pandas as pd

from usdh.report.markdown import section
from usdh.report.results import by_bits, fmt_cells, method_rank, protocol_rank, summarise

__all__ = ["lookup_section", "lookup_table"]

#: results.csv column -> the lookup table's name for it
FIGURES = (
    ("precision_r2", "precision"),
    ("precision_r2_nonempty", "precision, non-empty lookups"),
    ("recall_r2", "recall"),
    ("empty_r2", "empty lookups"),
)


def lookup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Hash lookup within Hamming radius 2, per protocol, method and code length (mean ± std over
    seeds, %): precision over all queries (an empty lookup counts 0), precision over the
    non-empty lookups, recall, and the share of queries that retrieve nothing."""
    out = []
    for column, name in FIGURES:
        if column not in df or df[column].isna().all():
            continue
        s = summarise(df.dropna(subset=[column]), column)
        s["cell"] = fmt_cells(s)
        t = by_bits(s, ["protocol", "method"], sort=False)
        t.insert(2, "figure", name)
        out.append(t)
    if not out:
        return pd.DataFrame()
    table = pd.concat(out, ignore_index=True)
    table["_p"] = protocol_rank(df, table["protocol"])
    table["_rank"] = method_rank(table["method"])
    return table.sort_values(["_p", "_rank"], kind="stable").drop(columns=["_p", "_rank"])


def lookup_section(lookup: pd.DataFrame, main: str) -> list[str]:
    """The README's lookup table of the main protocol (every protocol's: tables/hash_lookup.md)."""
    return section(
        "## Hash lookup within Hamming radius 2 (%)",
        lookup[lookup["protocol"] == main].drop(columns="protocol"),
        "Every database item within distance 2 of the query is returned: precision and recall "
        "of that set averaged over queries ('precision' counts an empty lookup as 0, the "
        "convention of the SH and ITQ evaluations; 'precision, non-empty lookups' leaves "
        "those queries out; '-' where every lookup was empty), and the share of queries whose "
        f"lookup returns nothing. Mean ± std over seeds, on `{main}`; every protocol's are in "
        "[tables/hash_lookup.md](tables/hash_lookup.md) and the figures below.",
    )
